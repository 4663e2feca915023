//! The PROXY protocol header (`mailfront_net::gate::parse_proxy_header`, the pure half of
//! `read_proxy_header`) on arbitrary bytes, and on headers built from the input. Invariants:
//! a complete header lies within the input and parses the same alone or followed by anything;
//! every strict prefix of it is incomplete (a header split across reads is waited for, never
//! refused); nothing incomplete reaches 4096 bytes; a well-formed v1 or v2 header built from
//! the input gives back its source address and its exact length.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_net::gate::{ProxyHeader, parse_proxy_header};

fn check(bytes: &[u8], rng: &mut mailfront_fuzz::Rng) -> Option<ProxyHeader> {
    let result = parse_proxy_header(bytes);
    match result {
        Ok(ProxyHeader::Incomplete) => assert!(bytes.len() < 4096),
        Ok(ProxyHeader::Complete { len, client: _ }) => {
            assert!(len > 0 && len <= bytes.len());
            let header = &bytes[..len];
            assert_eq!(parse_proxy_header(header), result);
            let mut longer = header.to_vec();
            longer.extend_from_slice(b"a1 LOGIN x y\r\n\0\xff");
            assert_eq!(parse_proxy_header(&longer), result);
            for k in [len - 1, rng.below(len as u64) as usize] {
                assert_eq!(
                    parse_proxy_header(&header[..k]),
                    Ok(ProxyHeader::Incomplete),
                    "prefix of {k} bytes of {header:?}"
                );
            }
        }
        Err(_) => {}
    }
    result.ok()
}

fuzz_target!(|data: &[u8]| {
    let Input {
        flags,
        mut rng,
        payload,
    } = Input::new(data);
    check(payload, &mut rng);

    // A header built from the input.
    let byte = |i: usize| payload.get(i).copied().unwrap_or(0);
    let port = u16::from_be_bytes([byte(0), byte(1)]);
    let dport = u16::from_be_bytes([byte(2), byte(3)]);
    let v6 = flags & 1 != 0;
    let source: IpAddr = if v6 {
        let mut octets = [0u8; 16];
        for (i, o) in octets.iter_mut().enumerate() {
            *o = byte(4 + i);
        }
        Ipv6Addr::from(octets).into()
    } else {
        Ipv4Addr::new(byte(4), byte(5), byte(6), byte(7)).into()
    };
    let client = SocketAddr::new(source, port);
    let header: Vec<u8> = if flags & 2 != 0 {
        let (family, dest) = if v6 {
            ("TCP6", "::1".to_owned())
        } else {
            ("TCP4", "127.0.0.1".to_owned())
        };
        format!("PROXY {family} {source} {dest} {port} {dport}\r\n").into_bytes()
    } else {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
        // TLVs after the addresses, from the input (v2 allows them).
        let tlv_len = usize::from(flags >> 4);
        let tlvs: Vec<u8> = payload.iter().skip(20).take(tlv_len).copied().collect();
        if v6 {
            h.push(0x21);
            h.extend_from_slice(&((36 + tlvs.len()) as u16).to_be_bytes());
            if let IpAddr::V6(a) = source {
                h.extend_from_slice(&a.octets());
            }
            h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        } else {
            h.push(0x11);
            h.extend_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
            if let IpAddr::V4(a) = source {
                h.extend_from_slice(&a.octets());
            }
            h.extend_from_slice(&[127, 0, 0, 1]);
        }
        h.extend_from_slice(&port.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&tlvs);
        h
    };
    let mut stream = header.clone();
    stream.extend_from_slice(payload);
    match check(&stream, &mut rng) {
        Some(ProxyHeader::Complete { len, client: got }) => {
            assert_eq!(len, header.len(), "{header:?}");
            assert_eq!(got, Some(client));
        }
        // TLVs from the input may be malformed (ppp checks them); a v1 header always parses.
        other => assert!(flags & 2 == 0 && flags >> 4 != 0, "{header:?}: {other:?}"),
    }
});
