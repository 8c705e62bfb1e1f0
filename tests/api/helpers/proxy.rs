//! A TCP proxy that tests cut to make a dependency disappear (for good, or for an outage that
//! ends), and a port nobody listens on.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// A TCP proxy in front of a real service: tests point the app at it, then cut it to simulate
/// the service going away (its port closes and every open connection drops).
pub struct TcpProxy {
    pub port: u16,
    cut: CancellationToken,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = CancellationToken::new();
        let upstream = upstream.to_owned();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return, // drops the listener: the port closes
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let upstream = upstream.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy { port, cut }
    }

    /// Closes the port and every connection through it.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

/// A TCP proxy that can take its service away and bring it back on the same port, as a
/// partition or a restart looks from the app: while down, every open connection drops and new
/// ones are closed at once.
pub struct OutageProxy {
    pub port: u16,
    /// Cancelled while the service is away; connections made under it drop when it is.
    up: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl OutageProxy {
    pub async fn start(upstream: &str) -> OutageProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let upstream = upstream.to_owned();
        let (accepting, stopping) = (up.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopping.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let alive = accepting.lock().unwrap().clone();
                if alive.is_cancelled() {
                    continue; // dropped: the client sees its connection closed
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = alive.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        OutageProxy { port, up, stop }
    }

    /// The service goes away: open connections drop, new ones are refused.
    pub fn go_down(&self) {
        self.up.lock().unwrap().cancel();
    }

    /// The service is back.
    pub fn come_back(&self) {
        *self.up.lock().unwrap() = CancellationToken::new();
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.up.lock().unwrap().cancel();
    }
}

/// A free local port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
