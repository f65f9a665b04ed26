//! One PostgreSQL LISTEN connection per server, fanned out to in-process subscribers. Writers
//! `NOTIFY` in the same transaction as their change, so every replica learns of it at commit.
//! A lost connection is reported as [`Notification::Reconnected`]: subscribers must then re-read
//! what they cache, since notifications sent while disconnected are gone.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, audit::EVENTS_CHANNEL};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// New audit events of this tenant.
    Events { tenant: String },
    /// Something on another channel (e.g. routes), with its payload.
    Other { channel: String, payload: String },
    /// The listener lost its connection and is listening again.
    Reconnected,
}

#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Notification>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self { sender: broadcast::channel(1024).0 }
    }
}

impl EventHub {
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.sender.subscribe()
    }

    fn publish(&self, notification: Notification) {
        // No subscribers is fine.
        let _ = self.sender.send(notification);
    }

    /// Listens on `channels` until `shutdown`, reconnecting after failures.
    pub async fn run(
        &self,
        store: Store,
        channels: Vec<&'static str>,
        shutdown: CancellationToken,
    ) {
        let mut channels = channels;
        if !channels.contains(&EVENTS_CHANNEL) {
            channels.push(EVENTS_CHANNEL);
        }
        while !shutdown.is_cancelled() {
            let listener = async {
                let mut listener = PgListener::connect_with(store.pool()).await?;
                listener.listen_all(channels.iter().copied()).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                () = shutdown.cancelled() => return,
                listener = listener => match listener {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            self.publish(Notification::Reconnected);
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) => self.publish(classify(notification)),
                    Ok(None) => {
                        // sqlx reconnects on the next call; what was sent meanwhile is lost.
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        self.publish(Notification::Reconnected);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

fn classify(notification: sqlx::postgres::PgNotification) -> Notification {
    if notification.channel() == EVENTS_CHANNEL {
        Notification::Events { tenant: notification.payload().to_string() }
    } else {
        Notification::Other {
            channel: notification.channel().to_string(),
            payload: notification.payload().to_string(),
        }
    }
}
