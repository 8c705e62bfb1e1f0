//! A TCP proxy that tests cut to make a dependency disappear, and a port nobody listens on.

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

/// A free local port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
