//! [`Woken`]: a future polled again only once it has asked to be.
//!
//! A loop that waits in `select!` for its work or for a rare event (the
//! connection's death, the process's shutdown) polls the rare one every
//! time it waits. tokio's `Notify` (behind `watch`) takes its waiter
//! list's lock on each of those polls: two locked instructions, ~18 cycles
//! each here, per wait, which per unpipelined command through the proxy
//! was four. Wrapped in [`Woken`], the rare future is polled once to
//! register, then only after its own waker fired; the polls in between
//! are a load of a flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::watch;

/// Polls `F` only when it was woken (and on the first poll).
pub struct Woken<F> {
    inner: Pin<Box<F>>,
    gate: WakeGate,
}

impl<F: Future> Woken<F> {
    /// Wraps `inner`; it is first polled when this is.
    pub fn new(inner: F) -> Woken<F> {
        Woken {
            inner: Box::pin(inner),
            gate: WakeGate::new(),
        }
    }
}

/// [`Woken`] waiting until a `watch` flag (shutdown, a connection's
/// death) turns true, or its sender is gone.
pub fn until_set(mut rx: watch::Receiver<bool>) -> Woken<impl Future<Output = ()>> {
    Woken::new(async move {
        let _ = rx.wait_for(|set| *set).await;
    })
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.gate.poll_with(cx, |cx| inner.as_mut().poll(cx))
    }
}

/// [`Woken`] for something polled by a function rather than a future of
/// its own (a channel's `poll_recv`): [`WakeGate::poll_with`] calls it only
/// when it was woken since it last returned `Pending`, or returned a value.
pub struct WakeGate {
    flag: Arc<Flag>,
    /// The waker the gated poll gets: wakes the task after setting the
    /// flag.
    waker: Waker,
    /// The task's waker `flag` holds, to tell cheaply whether it changed.
    task: Option<Waker>,
}

struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Default for WakeGate {
    fn default() -> Self {
        WakeGate::new()
    }
}

impl WakeGate {
    /// A gate whose first poll goes through.
    pub fn new() -> WakeGate {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        WakeGate {
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }

    /// Calls `poll` with the gate's waker if it was woken (or this task's
    /// waker changed, or `poll` last returned a value); else `Pending`
    /// without calling it.
    pub fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *self.flag.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
            self.task = Some(w);
            // A new task waker: let this poll through, in case a wake went
            // to the old one.
            self.flag.woken.store(true, Ordering::Release);
        }
        // A load and a store, not a swap (a locked instruction): a wake
        // between them came before the poll below, which sees it; one
        // during the poll sets the flag again for the next.
        if !self.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.flag.woken.store(false, Ordering::Release);
        let out = poll(&mut Context::from_waker(&self.waker));
        if out.is_ready() {
            // A value taken without waiting may have left no waker
            // registered: the next poll must go through to register one.
            self.flag.woken.store(true, Ordering::Release);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, and wakes whoever
    /// polled it last when told to.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_once_then_only_after_its_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None::<Waker>));
        let mut w = Woken::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        });
        let mut w = Pin::new(&mut w);
        for _ in 0..5 {
            assert!(futures_poll(&mut w).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once to register");
        ready.store(true, Ordering::SeqCst);
        // Ready now, but nobody woke it: still not polled.
        assert!(futures_poll(&mut w).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let registered = waker.lock().unwrap().take().expect("registered a waker");
        registered.wake();
        assert!(futures_poll(&mut w).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_watch_change_wakes_a_task_waiting_in_select() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut stop = until_set(rx);
        let (work_tx, mut work_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let waiter = tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::select! {
                    Some(_) = work_rx.recv() => seen += 1,
                    _ = &mut stop => return seen,
                }
            }
        });
        for i in 0..100 {
            work_tx.send(i).unwrap();
            tokio::task::yield_now().await;
        }
        tx.send(true).unwrap();
        assert_eq!(waiter.await.unwrap(), 100);
    }

    #[tokio::test]
    async fn a_gated_channel_misses_no_message() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut gate = WakeGate::new();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 300 {
                let m = std::future::poll_fn(|cx| gate.poll_with(cx, |cx| rx.poll_recv(cx))).await;
                got.push(m.expect("sender alive"));
            }
            got
        });
        for i in 0..300 {
            tx.send(i).unwrap();
            // Now back to back, now one at a time.
            if i % 3 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(reader.await.unwrap(), (0..300).collect::<Vec<_>>());
    }

    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }
}
