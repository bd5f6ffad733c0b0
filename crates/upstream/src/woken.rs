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

/// Polls `F` only when it was woken (and on the first poll).
pub struct Woken<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker `inner` is polled with: wakes the task after setting
    /// the flag.
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

impl<F: Future> Woken<F> {
    /// Wraps `inner`; it is first polled when this is.
    pub fn new(inner: F) -> Woken<F> {
        let flag = Arc::new(Flag {
            // The first poll goes through.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Woken {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *this.flag.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
            this.task = Some(w);
            // A new task waker: let `inner` see this poll, in case it was
            // woken while the old one was held.
            this.flag.woken.store(true, Ordering::Release);
        }
        // A load and a store, not a swap (a locked instruction): a wake
        // between them came before the poll below, which sees it; one
        // during the poll sets the flag again for the next.
        if !this.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        this.flag.woken.store(false, Ordering::Release);
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
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
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut stop = Woken::new(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
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

    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }
}
