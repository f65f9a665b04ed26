//! A test hook: pause one sandbox's push between its last lease check and the push itself,
//! the moment a stalled process (a GC pause, a frozen VM) would lose its lease without
//! knowing. Only code in the same process can arm it; no request can.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

struct Pause {
    reached: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

#[derive(Default)]
pub struct PushPauses {
    armed: Mutex<HashMap<Uuid, Pause>>,
}

impl PushPauses {
    /// Arms a pause for the next push of `sandbox`: the first receiver fires when the push
    /// reaches it; the push goes on when the sender is used or dropped.
    pub fn pause_before_push(&self, sandbox: Uuid) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached, reached_rx) = oneshot::channel();
        let (resume_tx, resume) = oneshot::channel();
        self.armed.lock().expect("push pauses poisoned").insert(sandbox, Pause { reached, resume });
        (reached_rx, resume_tx)
    }

    pub(crate) async fn before_push(&self, sandbox: Uuid) {
        let pause = self.armed.lock().expect("push pauses poisoned").remove(&sandbox);
        if let Some(pause) = pause {
            let _ = pause.reached.send(());
            let _ = pause.resume.await;
        }
    }
}
