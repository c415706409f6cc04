//! Property tests: no input from the network may panic the HTTP request
//! parser, the WebSocket frame checker or the client message reader, and
//! what they accept is consistent with what they were given.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use weim::http::{self, Parsed};
use weim::message::parse_client;
use weim::ws;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Bytes that look like the start of an HTTP request more often than noise.
fn http_like() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"GET "[..],
        b"POST ",
        b"/api/v1/login",
        b"/ws",
        b"?a=1&b=%zz",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: +3\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"Upgrade: websocket\r\n",
        b"Content-Type: application/json\r\n",
        b"X: \xff\xfe\r\n",
        b"\r\n",
        b"{\"a\":1}",
        b"\0",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn http_parser_never_panics(buf in http_like(), max_body in 0usize..64) {
        match http::parse(&buf, |_, _| max_body, PEER) {
            Parsed::Head(mut req, head) => {
                prop_assert!(head <= buf.len());
                prop_assert!(req.content_length <= max_body);
                prop_assert!(req.path.starts_with('/'));
                let used = req.fill_body(&buf[head..]);
                prop_assert!(head + used <= buf.len());
                prop_assert!(req.body.len() <= req.content_length);
                prop_assert!(req.body.capacity() <= req.content_length);
                let _ = req.params();
            }
            Parsed::Reject(status) => prop_assert!((400..500).contains(&status)),
            Parsed::Partial => prop_assert!(buf.len() <= http::MAX_HEAD),
        }
    }

    #[test]
    fn frame_checker_never_panics(buf in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..200) {
        match ws::check_frame(&buf, max) {
            Ok(ws::Frame::Whole(info)) => {
                prop_assert!(info.total_len() <= buf.len());
                prop_assert!(info.payload_len <= max);
                prop_assert!(!info.opcode.is_control() || (info.fin && info.payload_len <= 125));
                let mut payload = buf[info.payload_start..info.total_len()].to_vec();
                ws::unmask(&mut payload, info.mask);
            }
            Ok(ws::Frame::Partial(info)) => {
                prop_assert!(info.payload_start <= buf.len() && info.total_len() > buf.len());
                prop_assert!(info.payload_len <= max);
                let mut utf8 = ws::Utf8::default();
                let _ = utf8.feed_masked(&buf[info.payload_start..], info.mask, 0);
            }
            Ok(ws::Frame::Header) | Err(_) => {}
        }
    }

    #[test]
    fn masked_frames_round_trip(payload in prop::collection::vec(any::<u8>(), 0..70_000), mask in any::<[u8; 4]>(), split in any::<prop::sample::Index>()) {
        let mut frame = ws::text_frame(&payload);
        frame[1] |= 0x80;
        let header_len = frame.len() - payload.len();
        let mut masked = payload.clone();
        ws::unmask(&mut masked, mask);
        let mut buf = frame[..header_len].to_vec();
        buf.extend_from_slice(&mask);
        buf.extend_from_slice(&masked);
        let cut = split.index(buf.len());
        prop_assert!(matches!(
            ws::check_frame(&buf[..cut], 100_000),
            Ok(ws::Frame::Header | ws::Frame::Partial(_))
        ));
        let Ok(ws::Frame::Whole(info)) = ws::check_frame(&buf, 100_000) else {
            return Err(TestCaseError::fail("not whole"));
        };
        prop_assert_eq!(info.total_len(), buf.len());
        let mut got = buf[info.payload_start..].to_vec();
        ws::unmask(&mut got, info.mask);
        prop_assert_eq!(got, payload);
    }

    #[test]
    fn utf8_in_pieces_agrees_with_std(
        chars in prop::collection::vec(prop_oneof![
            any::<char>().prop_map(|c| c.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 1..3),
        ], 0..20),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let text: Vec<u8> = chars.concat();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
        cuts.push(text.len());
        cuts.sort_unstable();
        let mut utf8 = ws::Utf8::default();
        let mut from = 0;
        let mut failed_at = None;
        for &cut in &cuts {
            if !utf8.feed(&text[from..cut]) {
                failed_at = Some(cut);
                break;
            }
            from = cut;
        }
        // Fails at the first piece after which the text so far is known to
        // be invalid (not merely cut short), never later.
        let first_invalid = cuts.iter().copied().find(|&c| {
            matches!(std::str::from_utf8(&text[..c]), Err(e) if e.error_len().is_some())
        });
        prop_assert_eq!(failed_at, first_invalid);
        if failed_at.is_none() {
            prop_assert_eq!(utf8.complete(), std::str::from_utf8(&text).is_ok());
        }
    }

    #[test]
    fn client_message_reader_never_panics(text in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "\\{(\"[A-Za-z]{1,5}\":(\"[0-9a-z]{0,6}\"|-?[0-9]{1,20}|null|true|\\[\\]|\\{\\}),?){0,5}\\}".prop_map(String::into_bytes),
    ]) {
        let _ = parse_client(&text);
    }
}

/// Bodies that look like `multipart/form-data` more often than noise.
fn multipart_like() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"--XB"[..],
        b"--XB--",
        b"\r\n",
        b"\r\n\r\n",
        b"Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"",
        b"Content-Disposition: form-data; name=\"type\"",
        b"Content-Disposition: form-data; name=\"a\\\"; filename=",
        b"Content-Type: image/png",
        b"\x89PNG\r\n\x1a\n",
        b"1",
        b"\xff\xfe",
        b" \t",
        b";;==\"",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(pieces, 0..30).prop_map(|p| p.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn multipart_reader_never_panics(body in multipart_like(), quoted in any::<bool>()) {
        let ctype = if quoted {
            "multipart/form-data; boundary=\"XB\""
        } else {
            "multipart/form-data; charset=utf-8; boundary=XB"
        };
        let mut raw = format!(
            "POST /api/v1/im/chat/upload HTTP/1.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let Parsed::Head(mut req, head) = http::parse(&raw, |_, _| 1 << 20, PEER) else {
            panic!("a request head was expected");
        };
        req.fill_body(&raw[head..]);
        prop_assert!(req.body_complete());
        let params = req.params();
        if let Some(file) = req.file("file") {
            prop_assert!(params.is_some());
            let start = file.data.as_ptr() as usize - req.body.as_ptr() as usize;
            prop_assert!(start + file.data.len() <= req.body.len());
        }
    }
}
