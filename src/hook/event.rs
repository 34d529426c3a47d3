//! One event as nginx's conditional access log sends it (the shipped `log_format php_relaunch`):
//! `status=502 upstream=… uri=…`, with or without the syslog header `<PRI>TIMESTAMP TAG: ` in front,
//! or a line of Apache's piped log in the same format. What the pool user's PHP can put in a URI
//! never reaches anything but this parser: an event only says "a 502 (or 504) was served".

/// The longest datagram or line taken; anything longer is ignored.
pub const MAX_EVENT: usize = 16 * 1024;

/// The syslog tag of the shipped nginx lines.
const TAG: &str = "php_relaunch";

/// The status an event reports, when it is one that calls for a look: 502 or 504.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// 502 or 504.
    pub status: u16,
}

/// Reads one datagram or line; `None` for anything that is not a 502/504 event of ours.
pub fn parse(bytes: &[u8]) -> Option<Event> {
    if bytes.len() > MAX_EVENT {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let body = if text.starts_with('<') {
        without_header(text)?
    } else {
        text
    };
    let status = body.strip_prefix("status=")?;
    let status = status.split(' ').next()?;
    match status {
        "502" => Some(Event { status: 502 }),
        "504" => Some(Event { status: 504 }),
        _ => None,
    }
}

/// `<PRI>Mmm dd hh:mm:ss TAG: BODY` → `BODY`, when the priority is a number and the tag is ours.
fn without_header(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('<')?;
    let (priority, rest) = rest.split_once('>')?;
    if priority.is_empty() || priority.len() > 3 || !priority.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (header, body) = rest.split_once(": ")?;
    // The tag is the header's last word, `php_relaunch` or, from logger(1) --id, `php_relaunch[PID]`.
    let tag = header.rsplit(' ').next()?;
    let tag = tag.split_once('[').map_or(tag, |(name, pid)| {
        if pid
            .strip_suffix(']')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            name
        } else {
            tag
        }
    });
    (tag == TAG).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_nginx_and_apache_send() {
        for (text, status) in [
            (
                "<190>Nov 29 22:34:36 php_relaunch: status=502 upstream=unix:/run/php/php8.2-fpm.sock uri=/x",
                502,
            ),
            (
                "<190>Nov  2 02:04:06 php_relaunch: status=504 upstream=- uri=/",
                504,
            ),
            (
                "status=502 upstream=fcgi://127.0.0.1:9001 uri=/index.php\n",
                502,
            ),
            ("status=504 upstream=- uri=/slow.php\r\n", 504),
            ("status=502", 502),
            // logger(1) --rfc3164, with a hostname and a pid.
            (
                "<13>Nov 30 02:41:28 web1 php_relaunch[4242]: status=502 upstream=- uri=/",
                502,
            ),
        ] {
            assert_eq!(parse(text.as_bytes()), Some(Event { status }), "{text}");
        }
    }

    #[test]
    fn anything_else_is_ignored() {
        let long = format!("status=502 uri=/{}", "a".repeat(MAX_EVENT));
        for bad in [
            &b"status=200 upstream=- uri=/"[..],
            b"status=500 upstream=- uri=/",
            b"status=5020 uri=/",
            b"<190>Nov 29 22:34:36 other_tag: status=502 uri=/",
            b"<x>Nov 29 22:34:36 php_relaunch: status=502 uri=/",
            b"<190>Nov 29 22:34:36 php_relaunch status=502 uri=/",
            b"<190>Nov 29 22:34:36 php_relaunch[x]: status=502 uri=/",
            b"uri=/ status=502",
            b"",
            b"\xff\xfe status=502",
            long.as_bytes(),
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
