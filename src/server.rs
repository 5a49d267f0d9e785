//! Starting and stopping a server: bind every listener (`listen`), open the root (and warm the
//! file cache if asked), give every worker a socket per listener,
//! start the workers (each builds its own ring on its own thread and reports back before
//! `start` returns, so a missing io_uring is a start-up error, not a dead thread), and stop them
//! through an eventfd each worker's ring is reading.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::blocking;
use crate::config::{Config, Engine};
use crate::files::{CacheLimits, FileCache};
use crate::listen::{self, Listener};
use crate::observe::admin::Admin;
use crate::observe::errlog::{self, Kind};
use crate::observe::log_sink::{LogSink, LogTarget};
use crate::observe::stats::{Counters, Registry};
use crate::observe::Recorder;
use crate::uring::Worker;
use crate::Error;

/// A running server.
pub struct Server {
    /// Where it listens (never empty: `listen::open` fails on no address).
    addrs: Vec<SocketAddr>,
    /// Files put in the cache at start-up (`--warm`), if it was warmed.
    warmed: Option<usize>,
    threads: usize,
    root: std::path::PathBuf,
    engine: Engine,
    wakers: Vec<Arc<OwnedFd>>,
    blocking: Option<Arc<blocking::Control>>,
    workers: Vec<JoinHandle<Result<Counters, Error>>>,
    /// Every worker's counters, and whether a shutdown began.
    registry: Arc<Registry>,
    /// The access log's file, if one is written.
    log: Option<Arc<LogTarget>>,
    /// The `/health` and `/metrics` listener, if asked for.
    admin: Option<Admin>,
}

/// Something that can ask a server to stop (from another thread or a signal handler thread).
#[derive(Clone)]
pub struct Stopper {
    wakers: Vec<Arc<OwnedFd>>,
    blocking: Option<Arc<blocking::Control>>,
    registry: Arc<Registry>,
}

impl Stopper {
    /// Asks every worker to drain and exit. Idempotent.
    pub fn stop(&self) {
        self.registry.set_draining();
        if let Some(control) = &self.blocking {
            control.stop();
        }
        for waker in &self.wakers {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe {
                libc::write(
                    std::os::fd::AsRawFd::as_raw_fd(&**waker),
                    (&one as *const u64).cast(),
                    8,
                );
            }
        }
    }
}

impl Server {
    /// Binds (or takes over) every listener, opens the root and the access log, and starts
    /// `config.threads` workers. Listeners come first: systemd's sockets are taken before any
    /// other descriptor is opened, and a bad address fails before a long `--warm`.
    pub fn start(config: &Config) -> Result<Server, Error> {
        raise_fd_limit();
        let listeners = listen::open(&config.addrs)?;
        let registry = Arc::new(Registry::default());
        let log = match &config.access_log {
            Some((path, _)) => Some(Arc::new(
                LogTarget::open(path)
                    .map_err(|source| Error::AccessLog { path: path.clone(), source })?,
            )),
            None => None,
        };
        let engine = match config.engine {
            Engine::Auto => choose_engine()?,
            engine => engine,
        };
        let mut server = if engine == Engine::Blocking {
            Server::start_blocking(config, listeners, &registry, &log)?
        } else {
            Server::start_workers(config, engine, listeners, &registry, &log)?
        };
        if let Some(addr) = config.admin_addr {
            match Admin::start(addr, Arc::clone(&registry)) {
                Ok(admin) => server.admin = Some(admin),
                Err(e) => {
                    server.stopper().stop();
                    server.join_quietly();
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// Every worker gets a socket per listener: worker 0 the one opened, the others another
    /// SO_REUSEPORT socket on the same address (or a duplicate of an inherited one), all made
    /// before any worker starts, so a failure serves nothing.
    fn start_workers(
        config: &Config,
        engine: Engine,
        listeners: Vec<Listener>,
        registry: &Arc<Registry>,
        log: &Option<Arc<LogTarget>>,
    ) -> Result<Server, Error> {
        let limits = CacheLimits { open_files: open_files_share(config.threads), ..config.cache };
        let mut cache = FileCache::open(&config.root, limits)?;
        cache.set_site(Arc::clone(&config.site));
        let warmed = config.warm.then(|| cache.warm(&config.root, 0));
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.addr).collect();
        let mut per_worker: Vec<Vec<(OwnedFd, SocketAddr)>> = Vec::with_capacity(config.threads);
        for _ in 1..config.threads {
            let mut sockets = Vec::with_capacity(listeners.len());
            for listener in &listeners {
                sockets.push((OwnedFd::from(listener.another()?), listener.addr));
            }
            per_worker.push(sockets);
        }
        per_worker
            .insert(0, listeners.into_iter().map(|l| (OwnedFd::from(l.socket), l.addr)).collect());
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut wakers = Vec::new();
        let mut workers = Vec::new();
        for (index, sockets) in per_worker.into_iter().enumerate() {
            let waker = Arc::new(eventfd()?);
            wakers.push(Arc::clone(&waker));
            let config = config.clone();
            // Each worker owns its cache; a warmed one starts with the same (shared) entries.
            let files = cache
                .try_clone()
                .map_err(|source| Error::Os { what: "duplicate the root descriptor", source })?;
            let ready = ready_tx.clone();
            let recorder = Recorder::new(registry.worker(), false);
            let sink = log_sink(config.access_log.as_ref(), log);
            let handle = std::thread::Builder::new()
                .name(format!("ringserve-{index}"))
                .spawn(move || {
                    match AnyWorker::new(engine, &config, sockets, waker, files, recorder, sink) {
                        Ok(worker) => {
                            let _ = ready.send(Ok(()));
                            worker.run()
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            Err(Error::Os {
                                what: "worker",
                                source: std::io::Error::other("set-up failed"),
                            })
                        }
                    }
                })
                .map_err(|source| Error::Os { what: "spawn worker thread", source })?;
            workers.push(handle);
        }
        drop(ready_tx);
        let mut server = Server {
            addrs,
            warmed,
            engine,
            blocking: None,
            threads: config.threads,
            root: config.root.clone(),
            wakers,
            workers,
            registry: Arc::clone(registry),
            log: log.clone(),
            admin: None,
        };
        for _ in 0..server.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stopper().stop();
                    server.join_quietly();
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(server)
    }

    /// An accept thread per listener, a thread per connection, one cache for all of them.
    fn start_blocking(
        config: &Config,
        listeners: Vec<Listener>,
        registry: &Arc<Registry>,
        log: &Option<Arc<LogTarget>>,
    ) -> Result<Server, Error> {
        let limits = CacheLimits {
            entries: config.cache.entries * config.threads,
            bytes: config.cache.bytes * config.threads,
            open_files: open_files_share(1),
            ..config.cache
        };
        let mut cache = FileCache::open(&config.root, limits)?;
        cache.set_site(Arc::clone(&config.site));
        let warmed = config.warm.then(|| cache.warm(&config.root, 0));
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.addr).collect();
        let sockets =
            listeners.into_iter().map(|l| std::net::TcpListener::from(l.socket)).collect();
        let recorder = Recorder::new(registry.worker(), true);
        let sink = log_sink(config.access_log.as_ref(), log);
        let (handle, control) = blocking::start(config, sockets, cache, recorder, sink)
            .map_err(|source| Error::Os { what: "start the accept threads", source })?;
        Ok(Server {
            addrs,
            warmed,
            threads: 1,
            root: config.root.clone(),
            engine: Engine::Blocking,
            wakers: Vec::new(),
            blocking: Some(control),
            workers: vec![handle],
            registry: Arc::clone(registry),
            log: log.clone(),
            admin: None,
        })
    }

    /// The first address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address the server listens on, in `--addr` order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Files put in the cache at start-up, if it was warmed.
    pub fn warmed(&self) -> Option<usize> {
        self.warmed
    }

    /// The one-line start-up banner.
    pub fn banner(&self) -> String {
        let mut line = format!(
            "ringserve: serving {} at {} (engine {}, {}, {})",
            self.root.display(),
            // The first URL stays first and followed by a space: scripts and tests read it.
            self.addrs.iter().map(|a| format!("http://{a}/")).collect::<Vec<_>>().join(" and "),
            self.engine.name(),
            match self.engine {
                Engine::Blocking => "a thread per connection".to_string(),
                _ if self.threads == 1 => "1 worker thread".to_string(),
                _ => format!("{} worker threads", self.threads),
            },
            match self.warmed {
                Some(files) => format!("{files} files cached at start"),
                None => "files cached on first request".to_string(),
            }
        );
        if let Some(admin) = self.admin_addr() {
            line.push_str(&format!("; health and metrics at http://{admin}/"));
        }
        line
    }

    /// A handle that stops the server.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            wakers: self.wakers.clone(),
            blocking: self.blocking.clone(),
            registry: Arc::clone(&self.registry),
        }
    }

    /// The admin listener's address, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// Every worker's counters so far, summed (what `/metrics` shows).
    pub fn counters(&self) -> Counters {
        self.registry.total()
    }

    /// Reopens the access log (SIGUSR1, after logrotate moved it away). A failure is reported
    /// on standard error and the old file stays in use.
    pub fn reopen_log(&self) {
        let Some(target) = &self.log else { return };
        if let Err(e) = target.reopen() {
            let what = target.describe();
            errlog::report(
                Kind::LogReopen,
                format_args!("cannot reopen access log {what}: {e}; still writing the old file"),
            );
        }
    }

    /// Waits for every worker to finish; returns their counters summed.
    pub fn join(mut self) -> Result<Counters, Error> {
        let mut total = Counters::default();
        let workers = std::mem::take(&mut self.workers);
        for handle in workers {
            let counters = handle.join().map_err(|_| Error::Os {
                what: "worker",
                source: std::io::Error::other("panicked"),
            })??;
            total.add(&counters);
        }
        Ok(total)
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> Result<Counters, Error> {
        self.stopper().stop();
        self.join()
    }

    fn join_quietly(&mut self) {
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The default engine: io_uring if a ring can be set up; epoll, with one warning line on
/// standard error, if the kernel forbids it (a seccomp profile answering EPERM or ENOSYS, the
/// sysctl EPERM or EACCES). Other set-up failures are errors, as with `--engine uring`.
fn choose_engine() -> Result<Engine, Error> {
    // A small ring: set-up is what seccomp and the sysctl refuse; the workers build their own.
    match io_uring::IoUring::new(2) {
        Ok(_) => Ok(Engine::Uring),
        Err(source) if crate::error::uring_forbidden(&source) => {
            let stamp = errlog::timestamp(crate::observe::access_log::now_secs());
            eprintln!("{stamp} ringserve: {}", crate::error::fallback_warning(&source));
            Ok(Engine::Epoll)
        }
        Err(source) => Err(Error::Uring { what: "setup", source }),
    }
}

/// A worker of either event-loop engine.
enum AnyWorker {
    Uring(Box<Worker>),
    Epoll(Box<crate::epoll::Worker>),
}

impl AnyWorker {
    /// Sets up `engine`'s worker on the calling thread, which runs it.
    fn new(
        engine: Engine,
        config: &Config,
        sockets: Vec<(OwnedFd, SocketAddr)>,
        waker: Arc<OwnedFd>,
        files: FileCache,
        recorder: Recorder,
        sink: Option<LogSink>,
    ) -> Result<AnyWorker, Error> {
        Ok(if engine == Engine::Epoll {
            let worker = crate::epoll::Worker::new(config, sockets, waker, files, recorder, sink)?;
            AnyWorker::Epoll(Box::new(worker))
        } else {
            AnyWorker::Uring(Box::new(Worker::new(config, sockets, waker, files, recorder, sink)?))
        })
    }

    fn run(self) -> Result<Counters, Error> {
        match self {
            AnyWorker::Uring(worker) => worker.run(),
            AnyWorker::Epoll(worker) => worker.run(),
        }
    }
}

/// A worker's access-log sink, if a log is written.
fn log_sink(
    access_log: Option<&(std::path::PathBuf, crate::observe::access_log::LogFormat)>,
    target: &Option<Arc<LogTarget>>,
) -> Option<LogSink> {
    let (_, format) = access_log?;
    Some(LogSink::new(*format, Arc::clone(target.as_ref()?)))
}

fn eventfd() -> Result<OwnedFd, Error> {
    // SAFETY: eventfd has no pointer arguments; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Os { what: "eventfd", source: std::io::Error::last_os_error() });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Files one of `workers` caches may keep open: its share of half the descriptor limit, and of
/// `CACHE_OPEN_FILES_MAX`.
fn open_files_share(workers: usize) -> usize {
    let nofile = u64::from(crate::uring::nofile_limit());
    let total =
        (nofile / crate::limits::CACHE_OPEN_FILES_SHARE).min(crate::limits::CACHE_OPEN_FILES_MAX);
    (total as usize / workers.max(1)).max(1)
}

/// Raises the soft descriptor limit to the hard one (as nginx's worker_rlimit_nofile does), so
/// 10,000 connections do not hit EMFILE at the default soft limit of 1024.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the local struct only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
