//! Real-name verification: PRC resident identity numbers (GB 11643-1999)
//! and real names, and what weim keeps of them — a masked form and a keyed
//! hash (HMAC-SHA256), never the number itself.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Province-level codes that start a valid number (mainland provinces,
/// Taiwan 71, and 81/82/83 of the residence permits for Hong Kong, Macao
/// and Taiwan residents).
const PROVINCES: &[u8] = &[
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];
/// ISO 7064 MOD 11-2 weights of the first 17 digits.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// The check character for each remainder.
const CHECK: &[u8; 11] = b"10X98765432";

/// A checked 18-character ID number (upper-case `X`).
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber(String);

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdNumber({})", self.mask())
    }
}

/// Whether `year` is a leap year of the Gregorian calendar.
fn is_leap(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` of `year`.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl IdNumber {
    /// Checks a number: 17 digits and a check character (`x` accepted),
    /// a known province code, a real birth date from 1900 up to `today`
    /// (`YYYYMMDD` as a number) and the MOD 11-2 checksum.
    pub fn parse(text: &str, today: u32) -> Option<IdNumber> {
        let b = text.trim().as_bytes();
        if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let last = b[17].to_ascii_uppercase();
        if !last.is_ascii_digit() && last != b'X' {
            return None;
        }
        let digit = |i: usize| u32::from(b[i] - b'0');
        let number = |from: usize, to: usize| (from..to).fold(0, |n, i| n * 10 + digit(i));
        if !PROVINCES.contains(&(number(0, 2) as u8)) {
            return None;
        }
        let (year, month, day) = (number(6, 10), number(10, 12), number(12, 14));
        if year < 1900 || day == 0 || day > days_in_month(year, month) || number(6, 14) > today {
            return None;
        }
        let sum: u32 = WEIGHTS.iter().enumerate().map(|(i, w)| w * digit(i)).sum();
        if CHECK[(sum % 11) as usize] != last {
            return None;
        }
        let mut s = String::from_utf8_lossy(&b[..17]).into_owned();
        s.push(last as char);
        Some(IdNumber(s))
    }

    /// The first 3 and last 4 characters with `*` between.
    pub fn mask(&self) -> String {
        format!("{}***********{}", &self.0[..3], &self.0[14..])
    }

    /// HMAC-SHA256 of the number under `key`, lower-case hex.
    pub fn keyed_hash(&self, key: &[u8]) -> String {
        hex(&hmac_sha256(key, self.0.as_bytes()))
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of [`IdNumber::keyed_hash`]: `auth.id_hash_key` when configured,
/// else derived from the JWT secret (HMAC-SHA256 of a fixed label), so that
/// every node of a cluster computes the same hashes.
pub fn hash_key(configured: Option<&str>, jwt_secret: &str) -> Vec<u8> {
    match configured {
        Some(key) => key.as_bytes().to_vec(),
        None => hmac_sha256(jwt_secret.as_bytes(), b"weim national-id hash key v1").to_vec(),
    }
}

/// Checks a real name: 2 to 20 characters, letters (Han included) with
/// inner spaces or the middle dots of transliterated names.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (2..=20).contains(&n)
        && name.trim() == name
        && name.chars().any(char::is_alphabetic)
        && name
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, '·' | '•' | '.' | ' '))
}

/// The first character of a name, then one `*` per other character.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().into_iter().chain(chars.map(|_| '*')).collect()
}

/// Today's date as `YYYYMMDD` in China Standard Time (UTC+8), where the
/// birth dates on ID numbers are.
pub fn today_cst(unix_secs: i64) -> u32 {
    let (y, m, d, ..) = crate::auth::utc_datetime(unix_secs + 8 * 3600);
    (y as u32) * 10_000 + m * 100 + d
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: u32 = 20240601;

    /// Appends the check character to 17 digits.
    fn with_check(first17: &str) -> String {
        let sum: u32 = first17
            .bytes()
            .zip(WEIGHTS)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        format!("{first17}{}", CHECK[(sum % 11) as usize] as char)
    }

    #[test]
    fn known_numbers() {
        // The standard's example and a number ending in X.
        assert!(IdNumber::parse("11010519491231002X", TODAY).is_some());
        assert!(IdNumber::parse("11010519491231002x", TODAY).is_some());
        assert!(IdNumber::parse("110105194912310021", TODAY).is_none());
        let number = with_check("44052419800101001");
        let id = IdNumber::parse(&number, TODAY).unwrap();
        assert_eq!(id.mask(), format!("440***********{}", &number[14..]));
    }

    #[test]
    fn dates_and_leap_years() {
        for (date, ok) in [
            ("20000229", true),  // divisible by 400
            ("19000229", false), // divisible by 100 only
            ("20040229", true),
            ("20230229", false),
            ("20240229", true),
            ("19990431", false),
            ("19991301", false),
            ("19990001", false),
            ("19990100", false),
            ("18991231", false),
            ("20240601", true),  // today
            ("20240602", false), // tomorrow
        ] {
            let id = with_check(&format!("110101{date}123"));
            assert_eq!(IdNumber::parse(&id, TODAY).is_some(), ok, "{id}");
        }
    }

    #[test]
    fn shape_and_region() {
        let good = with_check("11010119900307123");
        assert!(IdNumber::parse(&good, TODAY).is_some());
        for bad in [
            "",
            "1101011990030712",
            "1101011990030712345",
            "11010119900307123Y",
            "1101011990030712X3",
            "１10101199003071234",
        ] {
            assert!(IdNumber::parse(bad, TODAY).is_none(), "{bad}");
        }
        let region = with_check("99010119900307123");
        assert!(IdNumber::parse(&region, TODAY).is_none());
        // Every wrong check character is refused.
        for c in "0123456789X".chars() {
            let other = format!("{}{c}", &good[..17]);
            assert_eq!(IdNumber::parse(&other, TODAY).is_some(), other == good);
        }
    }

    #[test]
    fn hashes_are_keyed() {
        let id = IdNumber::parse("11010519491231002X", TODAY).unwrap();
        let lower = IdNumber::parse("11010519491231002x", TODAY).unwrap();
        assert_eq!(id.keyed_hash(b"k1"), lower.keyed_hash(b"k1"));
        assert_ne!(id.keyed_hash(b"k1"), id.keyed_hash(b"k2"));
        assert_eq!(id.keyed_hash(b"k1").len(), 64);
        assert!(!format!("{id:?}").contains("19491231"));
        assert_eq!(hash_key(Some("abc"), "s"), b"abc");
        assert_eq!(hash_key(None, "s"), hash_key(None, "s"));
        assert_ne!(hash_key(None, "s"), hash_key(None, "t"));
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn names() {
        for ok in ["张三", "欧阳娜娜", "买买提·艾力", "John Smith", "Li"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "张",
            "",
            " 张三",
            "张三 ",
            "12",
            "张3",
            "<b>",
            "··",
            "一二三四五六七八九十一二三四五六七八九十一",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
    }

    #[test]
    fn today_in_china() {
        // 2024-02-29 16:00 UTC is 2024-03-01 00:00 in China.
        assert_eq!(today_cst(1_709_222_400), 20240301);
        assert_eq!(today_cst(1_709_222_399), 20240229);
    }
}
