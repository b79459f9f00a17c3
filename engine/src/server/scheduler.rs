//! The slot scheduler: one engine thread owns the model and N slots (each a session with
//! its KV cache). Every step feeds all busy slots through one batched forward pass: one
//! token (or a draft) for each decoding slot, a bounded chunk for each slot still reading
//! its prompt. While any slot decodes, the prompt chunks of a step share a budget
//! ([`generate::Feed::step_tokens`]), oldest request first, so new prompts stall the
//! running streams by a bounded amount however many arrive together. Requests beyond the
//! slots wait in a bounded queue; past that the caller gets [`Rejected::Busy`] (a 503).
//!
//! A slot keeps its tokens after its request ends, and a new request goes to the free slot
//! that shares the longest prefix with its prompt: a follow-up chat turn re-reads only
//! what is new. A request whose client went away (its `cancel` flag set, or its event
//! receiver dropped) loses its slot before the next step.

use super::metrics::{Metrics, SurfaceState};
use crate::backend::Backend;
use crate::generate::{self, Advance, Options, Stream};
pub use crate::generate::{Finish, TokenLogprob};
use crate::sampler::SamplingParams;
use crate::speculate::SpecOptions;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One generation request, ready for the engine.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// New tokens at most (already checked against the context).
    pub max_new: usize,
    /// `Some(n)`: report each chosen token's logprob and the top `n` alternatives.
    pub logprobs: Option<usize>,
    /// Reuse a slot's cached prefix (llama-server's `cache_prompt`, on by default).
    pub cache_prompt: bool,
    /// Generate past end-of-sequence tokens (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
    pub events: Sender<Event>,
    /// Set by the connection when the client is gone or a stop string matched.
    pub cancel: Arc<AtomicBool>,
    pub arrived: Instant,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_ms: f64,
    pub predicted_ms: f64,
    /// Speculative decoding: draft tokens verified, and how many the model kept.
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
}

#[derive(Debug)]
pub enum Event {
    /// The request got a slot; `cached` prompt tokens were reused from its KV cache.
    Started {
        cached: usize,
    },
    Token {
        id: u32,
        logprob: Option<TokenLogprob>,
    },
    Done {
        finish: Finish,
        usage: Usage,
    },
    Failed(String),
    /// The daemon is shutting down before this request got a slot.
    Closing,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Every slot is busy and the queue is full.
    Busy,
    /// The daemon is shutting down.
    Closing,
}

#[derive(Clone, Debug)]
pub struct SchedConfig {
    pub slots: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Prompt tokens one slot feeds per step, and the whole step while streams decode.
    pub feed: generate::Feed,
    pub eos: Vec<u32>,
    /// How each slot speculates.
    pub speculate: SpecOptions,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closing: bool,
    /// When closing: active requests still running at this moment are cut.
    cut_at: Option<Instant>,
    /// Requests in slots.
    active: usize,
}

/// The handle connection threads use to reach the engine thread.
pub struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// Requests in slots plus requests waiting, at most.
    cap: usize,
    metrics: Arc<Metrics>,
    /// Engine steps done so far; the watchdog pings only while this moves or all is idle.
    pub progress: AtomicU64,
    /// True while the engine thread waits for work.
    pub idle: AtomicBool,
    /// True once the engine thread has ended.
    pub stopped: AtomicBool,
}

impl Queue {
    /// A queue in front of `slots` slots where `waiting` more requests may wait.
    pub fn new(slots: usize, waiting: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            wake: Condvar::new(),
            cap: slots + waiting,
            metrics,
            progress: AtomicU64::new(0),
            idle: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a job to the engine thread, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let mut st = self.lock();
        if st.closing {
            return Err(Rejected::Closing);
        }
        if st.jobs.len() + st.active >= self.cap {
            self.metrics.requests_rejected.fetch_add(1, Relaxed);
            return Err(Rejected::Busy);
        }
        st.jobs.push_back(job);
        self.metrics.requests_total.fetch_add(1, Relaxed);
        self.metrics
            .requests_deferred
            .store(st.jobs.len() as u64, Relaxed);
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Stops taking requests; queued ones fail at once, running ones get `grace` to
    /// finish before they are cut with a final event.
    pub fn close(&self, grace: Duration) {
        let mut st = self.lock();
        st.closing = true;
        st.cut_at = Some(Instant::now() + grace);
        for job in st.jobs.drain(..) {
            let _ = job.events.send(Event::Closing);
        }
        self.metrics.requests_deferred.store(0, Relaxed);
        drop(st);
        self.wake.notify_all();
    }
}

/// A request in a slot.
struct Active {
    job: Job,
    stream: Stream,
    /// When the last token was produced (for inter-token latency).
    last: Option<Instant>,
    usage: Usage,
}

struct Slot<S> {
    session: S,
    active: Option<Active>,
}

/// Length of the common prefix of two token lists.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The engine thread: runs until the queue is closed and every slot is done.
pub fn run<B: Backend + 'static>(mut backend: B, queue: Arc<Queue>, cfg: SchedConfig) {
    let mut slots: Vec<Slot<B::Session>> = Vec::with_capacity(cfg.slots.max(1));
    for i in 0..cfg.slots.max(1) {
        match backend.new_session(0) {
            Ok(session) => slots.push(Slot {
                session,
                active: None,
            }),
            Err(e) if i > 0 => {
                tracing::warn!(slots = i, "only {i} slots fit: {e}");
                break;
            }
            Err(e) => {
                tracing::error!("cannot create a session: {e}; the engine cannot serve");
                queue.close(Duration::ZERO);
                queue.stopped.store(true, Relaxed);
                return;
            }
        }
    }
    let m = queue.metrics.clone();
    m.set_surface(SurfaceState {
        serving: backend.surface(),
        health: backend.health(),
        fallbacks: backend.fallbacks(),
    });
    loop {
        if !admit(&mut backend, &queue, &mut slots, &cfg) {
            break;
        }
        drop_cancelled(&queue, &mut slots);
        if slots.iter().all(|s| s.active.is_none()) {
            continue;
        }
        // A panic in the engine (a bug, or input it does not expect) must not take the
        // daemon down: the requests in that step fail, the others go on.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(&mut backend, &cfg, &m, &queue, &mut slots)
        }));
        if let Err(p) = stepped {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            let rows: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].active.is_some())
                .collect();
            fail_rows(
                &mut backend,
                &queue,
                &mut slots,
                &rows,
                &format!("engine panicked: {msg}"),
            );
        }
        m.set_surface(SurfaceState {
            serving: backend.surface(),
            health: backend.health(),
            fallbacks: backend.fallbacks(),
        });
        queue.progress.fetch_add(1, Relaxed);
    }
    queue.stopped.store(true, Relaxed);
    tracing::debug!("engine thread finished");
}

/// Moves queued jobs into free slots; waits while there is nothing to do. Returns false
/// when the queue is closed and all work is done.
fn admit<B: Backend>(
    backend: &mut B,
    queue: &Queue,
    slots: &mut [Slot<B::Session>],
    cfg: &SchedConfig,
) -> bool {
    let mut st = queue.lock();
    loop {
        if st.closing && st.cut_at.is_some_and(|t| Instant::now() >= t) {
            for slot in slots.iter_mut() {
                if let Some(a) = slot.active.take() {
                    finish(a, Finish::Shutdown);
                    st.active -= 1;
                }
            }
        }
        if st.active == 0 && !st.jobs.is_empty() && !st.closing {
            st = gather_burst(queue, st, slots.len());
        }
        // A job whose client left while it waited is dropped unstarted: starting it would
        // cost a step and truncate a slot's cached prefix for nothing.
        st.jobs.retain(|j| !j.cancel.load(Relaxed));
        while let Some(free) = best_free_slot(backend, slots, st.jobs.front()) {
            let Some(job) = st.jobs.pop_front() else {
                break;
            };
            start(backend, &mut slots[free], job, cfg, &queue.metrics);
            st.active += 1;
        }
        queue
            .metrics
            .requests_deferred
            .store(st.jobs.len() as u64, Relaxed);
        queue
            .metrics
            .requests_processing
            .store(st.active as u64, Relaxed);
        if st.active > 0 {
            queue.idle.store(false, Relaxed);
            return true;
        }
        if st.closing {
            return false;
        }
        queue.idle.store(true, Relaxed);
        st = queue
            .wake
            .wait_timeout(st, Duration::from_secs(1))
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

/// Requests that come in a burst to an idle engine (clients that start together, or that
/// all finished in one step and send their next requests) arrive over a millisecond or
/// two. Started in one step, their streams decode in lockstep; started as they trickle in,
/// each later prompt's prefill would stall the streams already running, one stall per
/// request. So an idle engine waits for the burst to end: until no request has come for
/// [`BURST_QUIET`], [`BURST_MAX`] at most, or until the slots are full.
fn gather_burst<'a>(
    queue: &'a Queue,
    mut st: MutexGuard<'a, QueueState>,
    slots: usize,
) -> MutexGuard<'a, QueueState> {
    let deadline = Instant::now() + BURST_MAX;
    while st.jobs.len() < slots && !st.closing {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let seen = st.jobs.len();
        st = queue
            .wake
            .wait_timeout(st, (deadline - now).min(BURST_QUIET))
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        if st.jobs.len() == seen {
            break;
        }
    }
    st
}

/// How long an idle engine waits after a request for the next one of a burst.
const BURST_QUIET: Duration = Duration::from_millis(3);
/// The longest an idle engine gathers a burst (a delay of the first token, at most).
const BURST_MAX: Duration = Duration::from_millis(15);

/// The free slot sharing the longest prefix with `job`'s prompt, counting a shared prefix
/// only where it covers at least half of the prompt or half of what the slot holds (a chat
/// turn shares all of the slot's last turn, however long its new message); otherwise (and
/// on ties) the emptiest. Without that floor a prompt sharing only its BOS or a word or two
/// with every cached conversation would prefer a busy cache to an empty slot, and evict
/// another client's prefix for one token of reuse: with 8 clients repeating their prompts
/// and one stray request between, two of the 8 lost their cache (`cached=1`, `cached=3` in
/// the log) and re-read 26 tokens each.
fn best_free_slot<B: Backend>(
    backend: &B,
    slots: &[Slot<B::Session>],
    job: Option<&Job>,
) -> Option<usize> {
    let job = job?;
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        .max_by_key(|(_, s)| {
            let toks = backend.tokens(&s.session);
            let shared = if job.cache_prompt {
                common_prefix(toks, &job.prompt)
            } else {
                0
            };
            let worth = if 2 * shared >= job.prompt.len().min(toks.len()) {
                shared
            } else {
                0
            };
            (worth, std::cmp::Reverse(toks.len()))
        })
        .map(|(i, _)| i)
}

fn start<B: Backend>(
    backend: &mut B,
    slot: &mut Slot<B::Session>,
    job: Job,
    cfg: &SchedConfig,
    m: &Metrics,
) {
    let eos = &cfg.eos;
    let shared = if job.cache_prompt {
        common_prefix(backend.tokens(&slot.session), &job.prompt)
    } else {
        0
    };
    // The last prompt token is always fed again: its logits pick the first new token.
    let reuse = shared.min(job.prompt.len().saturating_sub(1));
    backend.truncate(&mut slot.session, reuse);
    m.prompt_cached_tokens.fetch_add(reuse as u64, Relaxed);
    let usage = Usage {
        prompt_tokens: job.prompt.len(),
        cached_tokens: reuse,
        ..Usage::default()
    };
    let stream = Stream::new(
        job.prompt.clone(),
        reuse,
        Options {
            max_new: job.max_new,
            sampling: job.sampling.clone(),
            stop_ids: if job.ignore_eos {
                Vec::new()
            } else {
                eos.to_vec()
            },
            logprobs: job.logprobs,
        },
    )
    .with_speculation(cfg.speculate);
    let _ = job.events.send(Event::Started { cached: reuse });
    slot.active = Some(Active {
        job,
        stream,
        last: None,
        usage,
    });
}

fn drop_cancelled<S>(queue: &Queue, slots: &mut [Slot<S>]) {
    let mut freed = 0;
    for slot in slots.iter_mut() {
        if slot
            .active
            .as_ref()
            .is_some_and(|a| a.job.cancel.load(Relaxed))
        {
            slot.active = None;
            freed += 1;
        }
    }
    if freed > 0 {
        queue.lock().active -= freed;
    }
}

/// Sends the final event of a request (ignored if the client is gone).
fn finish(a: Active, reason: Finish) {
    let _ = a.job.events.send(Event::Done {
        finish: reason,
        usage: a.usage,
    });
}

/// One batched step over every busy slot through the generation loop's [`generate::step`],
/// then the events and metrics of what it produced.
fn step<B: Backend>(
    backend: &mut B,
    cfg: &SchedConfig,
    m: &Metrics,
    queue: &Queue,
    slots: &mut [Slot<B::Session>],
) {
    // Oldest request first: when the step's prompt budget runs short, the prompt that has
    // waited longest gets it.
    let mut busy: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].active.is_some())
        .collect();
    busy.sort_by_key(|&i| slots[i].active.as_ref().map(|a| a.job.arrived));
    let started = Instant::now();
    let result = {
        let mut by_slot: Vec<Option<(&mut B::Session, &mut Stream)>> = slots
            .iter_mut()
            .map(|s| {
                let a = s.active.as_mut()?;
                Some((&mut s.session, &mut a.stream))
            })
            .collect();
        let mut rows: Vec<(&mut B::Session, &mut Stream)> =
            busy.iter().filter_map(|&i| by_slot[i].take()).collect();
        generate::step(backend, &mut rows, cfg.feed)
    };
    let elapsed = started.elapsed();
    m.n_decode.fetch_add(1, Relaxed);
    m.busy_slot_steps.fetch_add(busy.len() as u64, Relaxed);
    let advances = match result {
        Ok(a) => a,
        Err(e) => return fail_rows(backend, queue, slots, &busy, &e.to_string()),
    };
    let total_rows: usize = advances
        .iter()
        .map(|a| a.prompt_read + usize::from(a.decoded))
        .sum();
    let decoding = advances.iter().filter(|a| a.decoded).count();
    m.step_seconds.observe(elapsed);
    m.step_rows.observe_value(total_rows as f64);
    m.step_decoding.observe_value(decoding as f64);
    tracing::trace!(
        rows = total_rows,
        decoding,
        ms = elapsed.as_secs_f64() * 1e3,
        "step"
    );
    let mut freed = 0;
    let mut ended = Vec::new();
    for (&i, adv) in busy.iter().zip(advances) {
        let slot = &mut slots[i];
        let Some(a) = slot.active.as_mut() else {
            continue;
        };
        let share = |n: usize| elapsed.mul_f64(n as f64 / total_rows.max(1) as f64);
        if adv.prompt_read > 0 {
            let t = share(adv.prompt_read);
            a.usage.prompt_ms += t.as_secs_f64() * 1e3;
            m.prompt_tokens.fetch_add(adv.prompt_read as u64, Relaxed);
            m.prompt_seconds.add(t);
        }
        if adv.decoded {
            let t = share(1);
            a.usage.predicted_ms += t.as_secs_f64() * 1e3;
            m.predicted_seconds.add(t);
        }
        if adv.drafted > 0 {
            a.usage.drafted_tokens += adv.drafted;
            a.usage.accepted_tokens += adv.accepted;
            m.drafted_tokens.fetch_add(adv.drafted as u64, Relaxed);
            m.accepted_tokens.fetch_add(adv.accepted as u64, Relaxed);
        }
        if adv.tokens.is_empty() && adv.finish.is_none() {
            continue;
        }
        let len = backend.tokens(&slot.session).len();
        m.n_tokens_max.fetch_max(len as u64, Relaxed);
        let now = Instant::now();
        match a.last {
            None => m.ttft.observe(now - a.job.arrived),
            Some(t) => m.inter_token.observe(now - t),
        }
        a.last = Some(now);
        a.usage.completion_tokens = a.stream.generated();
        m.predicted_tokens
            .fetch_add(adv.tokens.len().max(1) as u64, Relaxed);
        let Advance {
            tokens,
            logprobs,
            finish,
            ..
        } = adv;
        let mut logprobs = logprobs.into_iter();
        let gone = tokens.into_iter().any(|id| {
            let logprob = logprobs.next();
            a.job.events.send(Event::Token { id, logprob }).is_err()
        });
        if gone {
            slot.active = None;
            freed += 1;
            continue;
        }
        if let Some(r) = finish {
            if let Some(a) = slot.active.take() {
                ended.push((a, r));
            }
            freed += 1;
        }
    }
    // Free the slots before telling the clients, so that a client that sends its next
    // request right away finds room.
    if freed > 0 {
        queue.lock().active -= freed;
    }
    for (a, r) in ended {
        finish(a, r);
    }
}

/// Ends every request of a failed step with the engine's error and resets their
/// sessions (their caches may be half-written).
fn fail_rows<B: Backend>(
    backend: &mut B,
    queue: &Queue,
    slots: &mut [Slot<B::Session>],
    rows: &[usize],
    err: &str,
) {
    tracing::error!(
        error = err,
        sessions = rows.len(),
        "engine step failed; ending those requests"
    );
    let mut ended = Vec::new();
    for &i in rows {
        let slot = &mut slots[i];
        backend.truncate(&mut slot.session, 0);
        ended.extend(slot.active.take());
    }
    queue.lock().active -= ended.len();
    for a in ended {
        let _ = a
            .job
            .events
            .send(Event::Failed(format!("engine error: {err}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;
    use std::sync::mpsc;

    /// A toy model: the next token is the last one plus one; a token of 13 in the input
    /// makes it panic.
    struct Toy;

    /// A toy session: its tokens and the last step's logits.
    #[derive(Default)]
    struct ToySession {
        tokens: Vec<u32>,
        logits: Vec<f32>,
    }

    impl Backend for Toy {
        type Session = ToySession;
        fn surface(&self) -> crate::backend::Surface {
            crate::backend::Surface::Cpu
        }
        fn new_session(&mut self, _: usize) -> Result<ToySession, BackendError> {
            Ok(ToySession::default())
        }
        fn tokens<'a>(&self, s: &'a ToySession) -> &'a [u32] {
            &s.tokens
        }
        fn truncate(&mut self, s: &mut ToySession, n: usize) {
            s.tokens.truncate(n);
        }
        fn capacity(&self, _: &ToySession) -> usize {
            64
        }
        fn step(
            &mut self,
            sessions: &mut [&mut ToySession],
            ids: &[&[u32]],
            _needs: &[crate::backend::Need],
        ) -> Result<(), BackendError> {
            assert!(!ids.iter().any(|i| i.contains(&13)), "toy model hit 13");
            for (s, new) in sessions.iter_mut().zip(ids) {
                s.tokens.extend_from_slice(new);
                s.logits = vec![0.0; 32];
                s.logits[(*s.tokens.last().unwrap() as usize + 1) % 32] = 10.0;
            }
            Ok(())
        }
        fn output<'a>(&'a self, s: &'a ToySession) -> crate::backend::Output<'a> {
            crate::backend::Output::Logits(&s.logits)
        }
    }

    fn job(prompt: &[u32], max_new: usize) -> (Job, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let job = Job {
            prompt: prompt.to_vec(),
            sampling: SamplingParams::greedy(),
            max_new,
            logprobs: None,
            cache_prompt: true,
            ignore_eos: false,
            events: tx,
            cancel: Arc::default(),
            arrived: Instant::now(),
        };
        (job, rx)
    }

    fn drain(rx: &mpsc::Receiver<Event>) -> (usize, Vec<u32>, Option<Finish>, Option<String>) {
        let (mut cached, mut toks, mut fin, mut err) = (0, Vec::new(), None, None);
        for e in rx.iter() {
            match e {
                Event::Started { cached: c } => cached = c,
                Event::Token { id, .. } => toks.push(id),
                Event::Done { finish, .. } => fin = Some(finish),
                Event::Failed(m) => err = Some(m),
                Event::Closing => err = Some("closing".into()),
            }
        }
        (cached, toks, fin, err)
    }

    fn start_engine(slots: usize, waiting: usize) -> (Arc<Queue>, std::thread::JoinHandle<()>) {
        let q = Queue::new(slots, waiting, Arc::default());
        let cfg = SchedConfig {
            slots,
            queue: waiting,
            feed: 2.into(),
            eos: vec![31],
            speculate: SpecOptions::new(crate::speculate::Mode::Off),
        };
        let q2 = q.clone();
        (q, std::thread::spawn(move || run(Toy, q2, cfg)))
    }

    /// While a stream decodes, waiting prompts share the step's budget, oldest first, and
    /// a prompt read while nothing decodes is read in one chunk.
    #[test]
    fn prompts_share_a_bounded_budget_while_streams_decode() {
        let feed = generate::Feed {
            chunk: 128,
            step_tokens: 6,
        };
        assert_eq!(feed.prompt_budget(0), usize::MAX);
        assert_eq!(feed.prompt_budget(1), 5);
        assert_eq!(feed.prompt_budget(4), generate::Feed::MIN_PROMPT);
        assert_eq!(feed.prompt_budget(20), generate::Feed::MIN_PROMPT);
        assert_eq!(generate::Feed::from(7).prompt_budget(3), usize::MAX);

        let opts = |max_new| Options {
            max_new,
            sampling: SamplingParams::greedy(),
            stop_ids: Vec::new(),
            logprobs: None,
        };
        let mut toy = Toy;
        let (mut sa, mut sb, mut sc) = (
            ToySession::default(),
            ToySession::default(),
            ToySession::default(),
        );
        let mut a = Stream::new(vec![14], 0, opts(12));
        let mut older = Stream::new(vec![20; 30], 0, opts(1));
        let mut newer = Stream::new(vec![21; 9], 0, opts(1));
        generate::step(&mut toy, &mut [(&mut sa, &mut a)], feed).unwrap();
        assert!(a.prompt_done());
        let mut steps = Vec::new();
        while !newer.prompt_done() {
            let before = (sb.tokens.len(), sc.tokens.len());
            generate::step(
                &mut toy,
                &mut [
                    (&mut sa, &mut a),
                    (&mut sb, &mut older),
                    (&mut sc, &mut newer),
                ],
                feed,
            )
            .unwrap();
            steps.push((sb.tokens.len() - before.0, sc.tokens.len() - before.1));
        }
        // The older prompt's 30 tokens in chunks of 5 (its one new token ends it), the
        // newer one's 9 only after it: 5 and 4.
        assert_eq!(
            steps,
            [
                (5, 0),
                (5, 0),
                (5, 0),
                (5, 0),
                (5, 0),
                (5, 0),
                (0, 5),
                (0, 4)
            ]
        );
        assert_eq!(sa.tokens.len(), 1 + steps.len());

        // Nothing decodes: every prompt is read in one chunk.
        let (mut sb, mut sc) = (ToySession::default(), ToySession::default());
        let mut older = Stream::new(vec![20; 30], 0, opts(1));
        let mut newer = Stream::new(vec![21; 9], 0, opts(1));
        generate::step(
            &mut toy,
            &mut [(&mut sb, &mut older), (&mut sc, &mut newer)],
            feed,
        )
        .unwrap();
        assert_eq!((sb.tokens.len(), sc.tokens.len()), (30, 9));
    }

    #[test]
    fn generates_stops_and_reuses_prefixes() {
        let (q, t) = start_engine(1, 4);
        let (j, rx) = job(&[1, 2, 3, 4, 5], 3);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx), (0, vec![6, 7, 8], Some(Finish::Length), None));
        // Same prompt again: all but the last prompt token come from the cache.
        let (j, rx) = job(&[1, 2, 3, 4, 5], 3);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx).0, 4);
        // EOS (31) ends with Stop and is not sent as a token.
        let (j, rx) = job(&[28], 10);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx), (0, vec![29, 30], Some(Finish::Stop), None));
        // With ignore_eos the same request runs past 31 to its length limit.
        let (mut j, rx) = job(&[28], 5);
        j.ignore_eos = true;
        q.submit(j).unwrap();
        assert_eq!(
            drain(&rx),
            (0, vec![29, 30, 31, 0, 1], Some(Finish::Length), None)
        );
        q.close(Duration::ZERO);
        t.join().unwrap();
    }

    /// A prompt that shares only a token or two with the cached conversations takes an
    /// empty slot, so every cached prefix survives for its own follow-up.
    #[test]
    fn a_stray_prompt_leaves_the_cached_prefixes_alone() {
        let (q, t) = start_engine(3, 4);
        for p in [[1, 2, 3, 4, 5], [1, 7, 8, 9, 10]] {
            let (j, rx) = job(&p, 2);
            q.submit(j).unwrap();
            assert_eq!(drain(&rx).0, 0);
        }
        // Shares its first token with both cached prompts: not worth evicting either.
        let (j, rx) = job(&[1, 20, 21], 2);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx).0, 0);
        for p in [[1, 2, 3, 4, 5], [1, 7, 8, 9, 10]] {
            let (j, rx) = job(&p, 2);
            q.submit(j).unwrap();
            assert_eq!(drain(&rx).0, 4, "prompt {p:?} lost its cached prefix");
        }
        // A chat's next turn: the slot's whole last turn (prompt and reply) then a new
        // message longer than all of it still reuses that turn (all the slot holds: the
        // reply's last token, 7, was sampled but never fed).
        let mut turn = vec![1, 2, 3, 4, 5, 6, 7];
        turn.extend(14..26);
        let (j, rx) = job(&turn, 2);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx).0, 6, "the next chat turn lost its cached prefix");
        q.close(Duration::ZERO);
        t.join().unwrap();
    }

    #[test]
    fn full_queue_is_refused_and_a_panic_fails_only_its_step() {
        let (q, t) = start_engine(1, 0);
        let (j1, rx1) = job(&[12], 5);
        let (j2, _rx2) = job(&[1], 5);
        q.submit(j1).unwrap();
        // One slot, no waiting room: a second request is refused while the first runs.
        assert_eq!(q.submit(j2), Err(Rejected::Busy));
        let (_, toks, fin, err) = drain(&rx1);
        assert!(toks.is_empty() || toks == [13]);
        assert!(fin.is_none());
        assert!(err.unwrap().contains("toy model hit 13"));
        // The engine thread survived and serves the next request.
        let (j, rx) = job(&[1], 2);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx).1, vec![2, 3]);
        q.close(Duration::ZERO);
        t.join().unwrap();
    }

    /// A request whose client left while it waited is never started: it would otherwise
    /// take a slot and throw away the prefix cached there for another conversation.
    #[test]
    fn cancelled_queued_jobs_are_skipped() {
        let (q, t) = start_engine(1, 4);
        let (j, rx) = job(&[1, 2, 3, 4, 5], 2);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx).1, vec![6, 7]);
        let (gone, gone_rx) = job(&[20, 21], 5);
        gone.cancel.store(true, Relaxed);
        q.submit(gone).unwrap();
        let (j, rx) = job(&[1, 2, 3, 4, 5], 2);
        q.submit(j).unwrap();
        let (cached, toks, _, _) = drain(&rx);
        assert_eq!(toks, vec![6, 7]);
        assert_eq!(cached, 4, "the cancelled job wiped the cached prefix");
        assert!(
            gone_rx.try_iter().next().is_none(),
            "the cancelled job started"
        );
        q.close(Duration::ZERO);
        t.join().unwrap();
    }

    #[test]
    fn cancelled_requests_leave_their_slot() {
        let (q, t) = start_engine(1, 1);
        let (j, rx) = job(&[1], 60);
        let cancel = j.cancel.clone();
        q.submit(j).unwrap();
        assert!(matches!(rx.recv().unwrap(), Event::Started { .. }));
        cancel.store(true, Relaxed);
        let (j, rx2) = job(&[3], 2);
        q.submit(j).unwrap();
        assert_eq!(drain(&rx2).1, vec![4, 5]);
        drop(rx);
        q.close(Duration::ZERO);
        t.join().unwrap();
    }
}
