//! A way to take the server away from the browser and bring it back at the same address (the
//! origin, and with it the browser's storage and service worker, stays the same): a TCP relay on
//! a fixed loopback port in front of the test server. `cut` closes the listener and every
//! relayed connection (open board streams and chat sockets see the connection drop, new ones are
//! refused, exactly as with a stopped server); `restore` listens again on the same port. The
//! server itself and its database keep running, so the test can look at what was stored.
use std::net::SocketAddr;

use actix_web::rt::task::JoinHandle;
use std::cell::RefCell;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};

pub struct Outage {
    listen: SocketAddr,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
    connections: Rc<RefCell<Vec<JoinHandle<()>>>>,
}

impl Outage {
    /// Relays a free loopback port to `upstream` (`http://127.0.0.1:port`).
    pub async fn start(upstream: &str) -> std::io::Result<Outage> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| std::io::Error::other(format!("upstream address: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let mut outage = Outage {
            listen,
            upstream,
            accept: None,
            connections: Rc::default(),
        };
        outage.serve(listener);
        Ok(outage)
    }

    /// The address the browser uses.
    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let connections = self.connections.clone();
        self.accept = Some(actix_web::rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = actix_web::rt::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut open = connections.borrow_mut();
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        }));
    }

    /// The server goes away: nothing listens on the address and every open connection drops.
    pub fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for task in self.connections.borrow_mut().drain(..) {
            task.abort();
        }
    }

    /// The server is back at the same address.
    pub async fn restore(&mut self) -> std::io::Result<()> {
        if self.accept.is_some() {
            return Ok(());
        }
        // The aborted accept task drops its listener on the next poll; retry briefly.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.listen).await {
                Ok(listener) => break listener,
                Err(error) if tries < 50 => {
                    tries += 1;
                    let _ = error;
                    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(error) => return Err(error),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.cut();
    }
}
