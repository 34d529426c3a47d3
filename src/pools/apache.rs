//! Apache's mod_proxy_balancer as a [`Balancer`]: a replica is drained and put back through the
//! balancer-manager page, as its own form does it (nonce, Referer), and Apache's busy count says when
//! its requests in flight are done.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{Balancer, Replica, Standing};
use crate::poll::poll_until;

/// How long one request to the balancer-manager may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// How often Apache's busy count is read while a member drains.
const EVERY: Duration = Duration::from_millis(50);

/// The balancer-manager of one balancer.
#[derive(Debug, Clone)]
pub struct Apache {
    /// The balancer-manager page.
    url: String,
    /// The balancer, as in `balancer://NAME`.
    balancer: String,
}

/// A member's row in the balancer-manager page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    /// Its worker name, as the page's links pass it in `w=` (for a unix-socket member, the part
    /// after `|`: Apache names the worker by its URL, not by its socket).
    worker: String,
    /// How the page shows it (`unix:/run/php/a.sock|fcgi://a` for a unix-socket member).
    shown: String,
    /// Its status says Drn.
    draining: bool,
    /// Requests it is serving now.
    busy: u64,
}

impl Apache {
    pub fn new(url: String, balancer: String) -> Apache {
        Apache { url, balancer }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(true)
            .proxy(None)
            .build()
            .into()
    }

    fn page(&self) -> Result<String> {
        Self::agent()
            .get(&self.url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .with_context(|| format!("reading the balancer-manager at {}", self.url))
    }

    /// The replica's row, from `page`. A unix-socket member whose worker name another member shares
    /// cannot be told apart by the balancer-manager, so it is refused rather than guessed.
    fn member_in(&self, page: &str, replica: &Replica) -> Result<Member> {
        let wanted = replica.member.as_deref().unwrap_or_default();
        let rows = members(page, &self.balancer);
        let row = rows
            .iter()
            .find(|row| same_member(&row.shown, wanted) || same_member(&row.worker, wanted))
            .with_context(|| {
                let names: Vec<&str> = rows.iter().map(|r| r.shown.as_str()).collect();
                format!(
                    "balancer://{} at {} has no member {wanted} (it has: {})",
                    self.balancer,
                    self.url,
                    names.join(", ")
                )
            })?;
        if let Some(twin) = rows
            .iter()
            .find(|r| r.worker == row.worker && r.shown != row.shown)
        {
            bail!(
                "members {} and {} of balancer://{} share the worker name {}, so the balancer-manager \
                 cannot drain one alone: give each unix-socket member its own host, e.g. unix:/run/php/a.sock|fcgi://a",
                row.shown,
                twin.shown,
                self.balancer,
                row.worker
            );
        }
        Ok(row.clone())
    }

    fn member(&self, replica: &Replica) -> Result<Member> {
        self.member_in(&self.page()?, replica)
    }

    /// Sets or clears the member's drain flag.
    fn set_drain(&self, replica: &Replica, drain: bool) -> Result<()> {
        let page = self.page()?;
        let member = self.member_in(&page, replica)?;
        let nonce = parse_nonce(&page, &self.balancer).with_context(|| {
            format!("no nonce for balancer://{} at {}", self.balancer, self.url)
        })?;
        Self::agent()
            .post(&self.url)
            .header("Referer", &self.url)
            .send_form([
                ("b", self.balancer.as_str()),
                ("w", member.worker.as_str()),
                ("nonce", nonce.as_str()),
                ("w_status_N", if drain { "1" } else { "0" }),
            ])
            .with_context(|| {
                format!("setting the drain flag of {} at {}", member.shown, self.url)
            })?;
        ensure!(
            self.member(replica)?.draining == drain,
            "the balancer-manager at {} did not take the drain flag of {}",
            self.url,
            member.shown
        );
        Ok(())
    }
}

impl Balancer for Apache {
    fn name(&self) -> &'static str {
        "apache"
    }

    fn standing(&self, replica: &Replica) -> Standing {
        match self.member(replica) {
            Ok(row) if row.draining => Standing::Out,
            Ok(_) => Standing::In,
            Err(_) => Standing::Unknown,
        }
    }

    fn drain(&self, replica: &Replica, until: Instant, say: &mut dyn FnMut(String)) -> Result<()> {
        self.set_drain(replica, true)?;
        say(format!(
            "{}: drained in balancer://{}",
            replica.name, self.balancer
        ));
        // Apache's own count of the member's requests in flight.
        let drained = poll_until(until, EVERY, || match self.member(replica) {
            Ok(row) if row.busy == 0 => Ok(()),
            Ok(row) => Err(format!(
                "{}: Apache still counts {} busy requests after the drain timeout",
                replica.name, row.busy
            )),
            Err(err) => Err(format!("{}: {err:#}", replica.name)),
        });
        if let Err(said) = drained {
            say(said);
        }
        Ok(())
    }

    fn restore(&self, replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()> {
        if self.member(replica)?.draining {
            self.set_drain(replica, false)?;
            say(format!(
                "{}: back in balancer://{}",
                replica.name, self.balancer
            ));
        }
        Ok(())
    }
}

/// Whether the page's name of a member and the pools file's are the same (a trailing `/` aside).
fn same_member(page: &str, file: &str) -> bool {
    !file.is_empty() && page.trim_end_matches('/') == file.trim_end_matches('/')
}

/// `nonce=…` in the balancer's links.
fn parse_nonce(page: &str, balancer: &str) -> Option<String> {
    let at = page.find(&format!("b={balancer}&amp;"))?;
    let rest = &page[at..];
    let nonce = &rest[rest.find("nonce=")? + "nonce=".len()..];
    let end = nonce.find(|c: char| !(c.is_ascii_hexdigit() || c == '-'))?;
    Some(nonce[..end].to_owned())
}

/// The members of `balancer`, one per row whose link reads `?b=BALANCER&amp;w=WORKER&amp;…">SHOWN</a>`,
/// followed by the cells route, redir, factor, set, status, elected, busy, …
fn members(page: &str, balancer: &str) -> Vec<Member> {
    let link = format!("?b={balancer}&amp;w=");
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find(&link) {
        rest = &rest[at + link.len()..];
        let row_end = rest.find("</tr>").unwrap_or(rest.len());
        if let Some(member) = member_row(&rest[..row_end]) {
            found.push(member);
        }
        rest = &rest[row_end..];
    }
    found
}

/// One row, from just after `w=`.
fn member_row(row: &str) -> Option<Member> {
    let worker = unescape(&row[..row.find("&amp;")?]);
    let text = &row[row.find("\">")? + 2..];
    let (shown, cells) = text.split_once("</a></td>")?;
    let shown = unescape(&shown.replace("<i>", "").replace("</i>", ""));
    let cells: Vec<&str> = cells
        .split("<td>")
        .skip(1)
        .map(|cell| cell.split("</td>").next().unwrap_or_default().trim())
        .collect();
    Some(Member {
        worker,
        shown,
        draining: cells.get(4)?.split_whitespace().any(|flag| flag == "Drn"),
        busy: cells.get(6)?.parse().ok()?,
    })
}

/// The few entities Apache's `ap_escape_html` writes.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Apache 2.4's balancer-manager page, one balancer with two TCP members, the first drained.
    const TCP: &str = r#"<h3>LoadBalancer Status for <a href="/balancer-manager?b=php_www&amp;nonce=45f3a7a9-b44a-fd29-3471-84c3d757fe06">balancer://php_www</a> [p8df6fda7_php_www]</h3>
<table><tr><th>Worker URL</th><th>Route</th><th>RouteRedir</th><th>Factor</th><th>Set</th><th>Status</th><th>Elected</th><th>Busy</th><th>Load</th><th>To</th><th>From</th></tr>
<tr>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://127.0.0.1:54527&amp;nonce=45f3a7a9-b44a-fd29-3471-84c3d757fe06">fcgi://127.0.0.1:54527</a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Drn Ok </td><td>1</td><td>2</td><td>-100</td><td>912 </td><td> 72 </td></tr>
<tr>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://127.0.0.1:44453&amp;nonce=45f3a7a9-b44a-fd29-3471-84c3d757fe06">fcgi://127.0.0.1:44453</a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Ok </td><td>4</td><td>0</td><td>100</td><td>3.6K</td><td>288 </td></tr>
</table>"#;

    /// Apache 2.4.71's rows for unix-socket members: shown in italics, and the `w=` of the link is
    /// the worker's URL alone. The last two share theirs.
    const UNIX: &str = r#"<h3>LoadBalancer Status for <a href="/balancer-manager?b=php_www&amp;nonce=76e1ef67-beec-644b-dcf8-6a162f54fdb0">balancer://php_www</a> [p8df6fda7_php_www]</h3>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://r1&amp;nonce=76e1ef67-beec-644b-dcf8-6a162f54fdb0"><i>unix:/run/php/r1.sock|fcgi://r1</i></a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Drn Ok </td><td>0</td><td>3</td><td>0</td><td>  0 </td><td>  0 </td></tr>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://localhost&amp;nonce=76e1ef67-beec-644b-dcf8-6a162f54fdb0"><i>unix:/run/php/r2.sock|fcgi://localhost</i></a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Ok </td><td>0</td><td>0</td><td>0</td><td>  0 </td><td>  0 </td></tr>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://localhost&amp;nonce=76e1ef67-beec-644b-dcf8-6a162f54fdb0"><i>unix:/run/php/r3.sock|fcgi://localhost</i></a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Ok </td><td>0</td><td>0</td><td>0</td><td>  0 </td><td>  0 </td></tr>"#;

    fn replica(member: &str) -> Replica {
        Replica {
            name: "www/1".into(),
            fpm_bin: "/usr/sbin/php-fpm8.2".into(),
            fpm_config: "/etc/php/8.2/fpm/php-fpm.conf".into(),
            ping: "unix:///run/php/r1.sock;/ping".parse().unwrap(),
            member: Some(member.into()),
        }
    }

    fn apache() -> Apache {
        Apache::new("http://127.0.0.1/balancer-manager".into(), "php_www".into())
    }

    #[test]
    fn tcp_members() {
        assert_eq!(
            parse_nonce(TCP, "php_www").as_deref(),
            Some("45f3a7a9-b44a-fd29-3471-84c3d757fe06")
        );
        assert_eq!(parse_nonce(TCP, "other"), None);
        let first = apache()
            .member_in(TCP, &replica("fcgi://127.0.0.1:54527"))
            .unwrap();
        assert_eq!((first.draining, first.busy), (true, 2));
        assert_eq!(first.worker, "fcgi://127.0.0.1:54527");
        let second = apache()
            .member_in(TCP, &replica("fcgi://127.0.0.1:44453/"))
            .unwrap();
        assert_eq!((second.draining, second.busy), (false, 0));
        let err = apache()
            .member_in(TCP, &replica("fcgi://127.0.0.1:1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no member fcgi://127.0.0.1:1 (it has: fcgi://127.0.0.1:54527, fcgi://127.0.0.1:44453)"), "{err}");
        assert!(members(TCP, "other").is_empty());
    }

    #[test]
    fn unix_socket_members_are_found_by_what_the_page_shows_and_drained_by_worker_name() {
        let r1 = apache()
            .member_in(UNIX, &replica("unix:/run/php/r1.sock|fcgi://r1"))
            .unwrap();
        assert_eq!(
            r1,
            Member {
                worker: "fcgi://r1".into(),
                shown: "unix:/run/php/r1.sock|fcgi://r1".into(),
                draining: true,
                busy: 3
            }
        );
        let err = apache()
            .member_in(UNIX, &replica("unix:/run/php/r2.sock|fcgi://localhost"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("share the worker name fcgi://localhost"),
            "{err}"
        );
    }
}
