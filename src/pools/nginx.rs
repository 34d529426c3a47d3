//! nginx as a [`Balancer`]: a replica is drained by removing its unix socket. nginx's connect then
//! fails at once and `fastcgi_next_upstream` carries the request to another replica, while the
//! master keeps the bound socket for its requests in flight; a start binds a new one.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use super::{Balancer, Replica, Standing};
use crate::fpm;

#[derive(Debug, Clone, Copy)]
pub struct Nginx;

/// The unix socket nginx reaches a replica on, from its config's `listen`.
fn socket(replica: &Replica) -> Option<PathBuf> {
    fpm::listen_socket(&replica.fpm_config)
}

impl Balancer for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn standing(&self, replica: &Replica) -> Standing {
        if socket(replica).is_some_and(|s| s.exists()) {
            Standing::In
        } else {
            Standing::Out
        }
    }

    fn drain(&self, replica: &Replica, _until: Instant, say: &mut dyn FnMut(String)) -> Result<()> {
        let Some(socket) = socket(replica) else {
            return Ok(());
        };
        match std::fs::remove_file(&socket) {
            Ok(()) => say(format!(
                "{}: drained (removed {})",
                replica.name,
                socket.display()
            )),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => bail!(
                "cannot drain {}: removing {}: {err}",
                replica.name,
                socket.display()
            ),
        }
        Ok(())
    }

    fn restore(&self, _replica: &Replica, _say: &mut dyn FnMut(String)) -> Result<()> {
        // The started master bound a fresh socket: nginx reaches it again.
        Ok(())
    }
}
