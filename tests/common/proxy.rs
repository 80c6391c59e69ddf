//! A TCP proxy the test controls, for network partitions between orchestrator nodes (issue
//! 5): it forwards connections to one node and refuses (and cuts) those that come from blocked
//! source addresses. Each node listens on, and talks from, its own loopback address
//! (127.0.0.2, 127.0.0.3, ...), so a proxy can tell the nodes apart.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct Rules {
    blocked: HashSet<IpAddr>,
    /// Open connections with their source address.
    open: Vec<(IpAddr, AbortHandle)>,
}

/// A proxy in front of one node; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`. Must be called within a
    /// Tokio runtime.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let rules: Arc<Mutex<Rules>> = Arc::default();
        let accept_rules = Arc::clone(&rules);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, from)) = listener.accept().await {
                let mut rules = accept_rules.lock().expect("rules");
                if rules.blocked.contains(&from.ip()) {
                    continue; // dropped: the connection closes at once
                }
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                rules.open.retain(|(_, handle)| !handle.is_finished());
                rules.open.push((from.ip(), connection.abort_handle()));
            }
        })
        .abort_handle();
        Proxy {
            addr,
            rules,
            accept,
        }
    }

    /// Refuses connections from `sources` and cuts the open ones.
    pub fn block(&self, sources: &[IpAddr]) {
        let mut rules = self.rules.lock().expect("rules");
        rules.blocked.extend(sources.iter().copied());
        for (source, connection) in &rules.open {
            if sources.contains(source) {
                connection.abort();
            }
        }
    }

    /// Lets every source through again.
    pub fn heal(&self) {
        self.rules.lock().expect("rules").blocked.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(rules) = self.rules.lock() {
            for (_, connection) in &rules.open {
                connection.abort();
            }
        }
    }
}
