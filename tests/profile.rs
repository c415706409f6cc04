//! Profile endpoints end to end (PROTOCOL §1.2 `user/update/*`, §1.3
//! `user/info`, `user/me`): every documented error text, the ID checks,
//! and that the ID number never comes back.

mod common;

use common::*;
use serde_json::Value;

/// 17 digits and their MOD 11-2 check character.
fn id_card(first17: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .bytes()
        .zip(W)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

/// A valid number unlikely to be used by any other test or run: birth date
/// and sequence drawn from the clock, the process and a counter.
fn fresh_id_card() -> String {
    let r = fresh_u64();
    let (year, month, day, seq) = (
        1950 + r % 50,
        1 + (r / 50) % 12,
        1 + (r / 600) % 28,
        (r / 16_800) % 1000,
    );
    id_card(&format!("320102{year}{month:02}{day:02}{seq:03}"))
}

#[track_caller]
fn expect(reply: &Value, code: i64, msg: &str) {
    assert_eq!(reply["code"], code, "{reply}");
    assert_eq!(reply["msg"], msg, "{reply}");
}

fn on_both(check: fn(&Node)) {
    for store in [Store::Sqlite, Store::Mysql] {
        check(&Node::start_on(store));
    }
}

#[test]
fn nickname() {
    on_both(|node| {
        let a = node.new_account();
        let path = "/api/v1/user/update/nickname";
        for bad in ["", "abc", "一", "123456789012345678901", "一二三四五六七"] {
            expect(
                &node.api_as(&a.token, path, &[("nickname", bad)]),
                CODE_FAIL,
                "昵称长度不合法",
            );
        }
        expect(
            &node.api_as(&a.token, path, &[]),
            CODE_FAIL,
            "昵称长度不合法",
        );
        let reply = node.api_as(&a.token, path, &[("nickname", "小明同学")]);
        expect(&reply, CODE_OK, "设置成功");
        // The rows changed, as the old server answered: 1, then 0 for the
        // same nickname again.
        assert_eq!(reply["data"]["result"], 1);
        assert!(reply["data"]["t"].is_string(), "{reply}");
        assert_eq!(node.me(&a.token)["data"]["user"]["nickname"], "小明同学");
        let again = node.api_as(&a.token, path, &[("nickname", "小明同学")]);
        expect(&again, CODE_OK, "设置成功");
        assert_eq!(again["data"]["result"], 0, "{again}");
        expect(
            &node.api_as("forged", path, &[("nickname", "abcd")]),
            CODE_AUTH,
            "鉴权失败",
        );
    });
}

#[test]
fn realname_verification() {
    on_both(|node| {
        let a = node.new_account();
        let b = node.new_account();
        let path = "/api/v1/user/update/realname";
        let good = fresh_id_card();
        for name in [
            "",
            "张",
            "张3",
            "一二三四五六七八九十一二三四五六七八九十一",
        ] {
            let reply = node.api_as(&a.token, path, &[("real_name", name), ("id_card", &good)]);
            expect(&reply, CODE_FAIL, "姓名长度不合法");
        }
        let tomorrow = {
            let (y, m, d) = civil(now_secs() + 8 * 3600 + 86_400);
            id_card(&format!("110101{y:04}{m:02}{d:02}123"))
        };
        for bad in [
            String::new(),
            format!(
                "{}{}",
                &good[..17],
                if &good[17..] == "0" { "1" } else { "0" }
            ),
            id_card("11010119000229123"), // 1900 is no leap year
            id_card("11010120230229123"), // nor is 2023
            id_card("11010119991301123"),
            id_card("99010119900101123"), // no such region
            id_card("11010118991231123"),
            tomorrow,
            good[..17].to_string(),
            format!("{good}1"),
        ] {
            let reply = node.api_as(&a.token, path, &[("real_name", "张三"), ("id_card", &bad)]);
            expect(&reply, CODE_FAIL, "身份证不合法");
        }
        let leap = id_card(&format!("1101012000022912{}", std::process::id() % 10));
        let reply = node.api_as(&a.token, path, &[("real_name", "张三"), ("id_card", &leap)]);
        assert!(
            reply["code"] == CODE_OK || reply["msg"] == "身份证不合法",
            "2000-02-29 is a date: {reply}"
        );
        let reply = node.api_as(
            &a.token,
            path,
            &[("real_name", "欧阳娜娜"), ("id_card", &good)],
        );
        expect(&reply, CODE_OK, "实名认证成功");
        assert_eq!(reply["data"]["result"], 1);
        assert!(!reply.to_string().contains(&good[3..14]), "{reply}");
        let me = node.me(&a.token);
        assert_eq!(me["data"]["user"]["realname_verified"], true, "{me}");
        // The same number on another account: refused like an invalid one.
        let reply = node.api_as(&b.token, path, &[("real_name", "李四"), ("id_card", &good)]);
        expect(&reply, CODE_FAIL, "身份证不合法");
        assert_eq!(
            node.me(&b.token)["data"]["user"]["realname_verified"],
            false
        );
        // Lower-case x is the same number.
        let reply = node.api_as(
            &a.token,
            path,
            &[("real_name", "欧阳娜娜"), ("id_card", &good.to_lowercase())],
        );
        expect(&reply, CODE_OK, "实名认证成功");
        // No answer ever carries the number or its middle digits.
        for reply in [
            node.me(&a.token),
            node.api_as(&b.token, "/api/v1/user/info", &[("id", &a.id.to_string())]),
        ] {
            let text = reply.to_string();
            assert!(!text.contains(&good[6..14]), "{text}");
        }
    });
}

/// `(year, month, day)` of a unix time.
fn civil(secs: i64) -> (i64, u32, u32) {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn location() {
    on_both(|node| {
        let a = node.new_account();
        let path = "/api/v1/user/update/location";
        for (lon, lat) in [
            ("", "1"),
            ("1", ""),
            ("180.01", "0"),
            ("-180.5", "0"),
            ("0", "90.1"),
            ("0", "-91"),
            ("NaN", "0"),
            ("inf", "0"),
            ("1e400", "0"),
            ("east", "0"),
        ] {
            let reply = node.api_as(&a.token, path, &[("longitude", lon), ("latitude", lat)]);
            expect(&reply, CODE_FAIL, "数据非法");
        }
        let reply = node.api_as(&a.token, path, &[("longitude", "-180"), ("latitude", "90")]);
        expect(&reply, CODE_OK, "更新位置成功");
        let reply = node.request(
            &Request::post(path)
                .login_token(&a.token)
                .json(&serde_json::json!({"longitude": 116.4, "latitude": 39.9})),
        );
        expect(&reply.api(), CODE_OK, "更新位置成功");
    });
}

#[test]
fn info_and_me() {
    on_both(|node| {
        let a = node.new_account();
        let b = node.new_account();
        let reply = node.api_as(&a.token, "/api/v1/user/info", &[("id", &b.id.to_string())]);
        expect(&reply, CODE_OK, "请求成功");
        let user = &reply["data"]["user"];
        assert_eq!(user["id"], b.id);
        assert_eq!(user["username"], b.username.as_str());
        for key in ["nickname", "avatar"] {
            assert!(user[key].is_string(), "{reply}");
        }
        assert!(
            user["sex"].is_i64() && user["realname_verified"].is_boolean(),
            "{reply}"
        );
        assert!(user.get("password_hash").is_none() && user.get("longitude").is_none());
        for bad in ["", "0", "-1", "x", "99999999999999999999"] {
            let reply = node.api_as(&a.token, "/api/v1/user/info", &[("id", bad)]);
            expect(&reply, CODE_FAIL, "非法参数");
        }
        let reply = node.api_as(
            &a.token,
            "/api/v1/user/info",
            &[("id", "9000000000000000000")],
        );
        expect(&reply, CODE_NOT_FOUND, "用户不存在");
        expect(
            &node.api("/api/v1/user/info", &[("id", "1")]),
            CODE_AUTH,
            "鉴权失败",
        );
        let me = node.me(&a.token);
        assert_eq!(me["data"]["user"]["id"], a.id, "{me}");
    });
}
