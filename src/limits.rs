//! Every bound ringserve enforces, in one place, with its unit in its name and a line on why
//! that value. Values a user may tune have a CLI flag in `config.rs`; these are their defaults
//! and the compile-time ceilings that size the memory allocated at start-up.

/// One kibibyte, to keep sizes below readable.
pub const KIB: usize = 1024;

/// Largest request head (request line + headers + blank line) accepted; a longer one gets 431.
/// nginx's default `large_client_header_buffers 4 8k` accepts 8 KiB header lines; we bound the
/// whole head at the same 8 KiB, which every browser request fits comfortably.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * KIB;

/// Longest request target (path + query) accepted; longer gets 414. Same as nginx's 8k buffer.
pub const REQUEST_TARGET_BYTES_MAX: usize = 8 * KIB - 64;

/// Most header fields parsed per request; more gets 431. Browsers send about 15; 64 leaves room
/// for proxies without letting a client make us scan thousands of fields.
pub const HEADER_COUNT_MAX: usize = 64;

/// Bytes per provided receive buffer. A typical request head is 100-600 bytes; 4 KiB holds a
/// pipelined burst of 16 small requests in one completion while keeping the ring small.
pub const RECV_BUFFER_BYTES: usize = 4 * KIB;

/// Provided receive buffers per worker. Kernel rule: a power of two, at most 32768. Buffers go
/// back to the ring in the same loop iteration they arrive in, so this only has to cover the
/// completions of one batch: 2048 x 4 KiB = 8 MiB per worker.
pub const RECV_BUFFER_COUNT: u16 = 2048;

/// Receive buffer of every connection socket (SO_RCVBUF; the kernel doubles it for its
/// bookkeeping). Requests are small, so this never limits a well-behaved client, even one
/// pipelining deeply; it bounds, in the kernel, how many bytes a client can push ahead of the
/// responses it reads before TCP's window stops it, and so how many receive buffers a multishot
/// recv can take for one connection before we have seen them. The default (128 KiB, growing
/// with autotuning) let 300 clients that never read take every receive buffer.
pub const RECV_WINDOW_BYTES: usize = 16 * KIB;

/// Bytes a connection socket may hold that TCP has not sent yet (TCP_NOTSENT_LOWAT): a send or
/// sendfile stops there, and the socket reads as writable again once half of it left. Without
/// it the kernel queued whatever the send buffer allowed, about 1.3 MB per connection under a
/// slow-read attack (1,000 clients reading 16 bytes every 3 s from a 4 MiB file: 1.27 GB of
/// TCP memory); allocating those small segments took the whole CPU for seconds and normal
/// clients timed out. With 128 KiB: 79k pages of TCP memory instead of 326k, 0 failed
/// fetches, the worst 6 ms. It also helps fast clients: 1 MiB file, 100 connections, medians of
/// 5 rounds (req/s, server CPU-us per request), unset / 64 KiB / 128 KiB / 256 KiB:
/// loadgen 5,369 186 / 6,023 166 / 6,096 164 / 5,645 177;
/// wrk 3,419 143 / 5,509 157 / 5,600 148 / 4,723 158.
pub const UNSENT_BYTES_MAX: usize = 128 * KIB;

/// Receive buffers one connection may hold beyond its input buffer while it does not read its
/// responses (see "Backpressure" in ARCHITECTURE.md). On Linux 6.17+ each multishot recv is
/// limited to what the input buffer can take, so nothing is ever held; on older kernels a recv
/// keeps taking buffers until its cancel lands, and a connection that overruns this many is
/// closed, so buffers are always there for other connections (measured: 300 clients that
/// never read, 0 overruns with the limit, 299 without it).
pub const HELD_BUFFERS_PER_CONNECTION_MAX: u16 = 8;

/// Receive buffers all connections of a worker may hold at once: a quarter of the ring, so
/// three quarters always cycle for everyone else, however many clients stop reading.
pub const HELD_BUFFERS_TOTAL_MAX: u32 = RECV_BUFFER_COUNT as u32 / 4;

/// Per-connection buffer for bytes received but not yet answered: a request split over several
/// reads, or pipelined requests that arrive while a response is still being sent. Taken from a
/// pool only while it holds bytes, so idle connections cost nothing here. Must hold a maximal
/// head plus one receive buffer.
pub const INPUT_BUFFER_BYTES: usize = REQUEST_HEAD_BYTES_MAX + 4 * RECV_BUFFER_BYTES;

/// Bytes of response heads one send can carry: many pipelined responses are batched into one
/// `sendmsg`. Must hold at least one maximal response head.
pub const BATCH_HEAD_BYTES: usize = 16 * KIB;

/// Largest response head ringserve writes (status line, headers, and the small bodies of error
/// responses, which are copied inline). A 301 carries the request path in `Location`, hence
/// the request-target limit inside it.
pub const RESPONSE_HEAD_BYTES_MAX: usize = REQUEST_TARGET_BYTES_MAX + 1024;

/// iovecs per send: a header and a body for each batched response. 64 covers a pipelining
/// depth of 32 responses per send; the kernel's UIO_MAXIOV is 1024.
pub const BATCH_IOVEC_COUNT: usize = 64;

/// Connection slots per worker, allocated at start-up (about 100 bytes each). Connections
/// accepted beyond this are closed at once. Sized for the 10,000-connection benchmark on a
/// single worker.
pub const CONNECTIONS_PER_WORKER_MAX: u32 = 16_384;

/// Completions copied out of the CQ per loop turn before they are handled.
pub const CQE_BATCH_COUNT: usize = 256;

/// Submission queue entries per ring. A loop turn submits at most a few SQEs per completion it
/// handled; when the SQ fills mid-turn we submit early, so this bounds only syscall batching.
pub const SQ_ENTRIES: u32 = 1024;

/// Completion queue entries per ring: multishot recv and accept post many CQEs per SQE, so the
/// CQ is sized for every live connection having one completion pending plus the batch in hand.
pub const CQ_ENTRIES: u32 = 4 * CONNECTIONS_PER_WORKER_MAX;

/// Timer resolution: one ring timeout per worker fires this often, expires connections and
/// refreshes the cached Date header. One second is the resolution of every HTTP timeout.
pub const TICK_MILLIS: u64 = 1000;

/// Default seconds to receive a complete request head (nginx `client_header_timeout` 60s).
pub const HEADER_TIMEOUT_SECS: u32 = 60;

/// Default seconds an idle keep-alive connection is kept (nginx `keepalive_timeout` 75s).
pub const KEEPALIVE_TIMEOUT_SECS: u32 = 75;

/// Default seconds a response may make no progress before the connection is dropped (nginx
/// `send_timeout` 60s): a reader that stops reading must not hold memory forever.
pub const SEND_TIMEOUT_SECS: u32 = 60;

/// Seconds to keep reading (and discarding) after we half-close a connection following an
/// error, so the client sees the error response rather than a reset (nginx `lingering_timeout`).
pub const LINGER_TIMEOUT_SECS: u32 = 5;

/// Default requests served on one keep-alive connection before it is closed (nginx 1.19.10+
/// `keepalive_requests 1000`), which bounds how long one client can pin a worker's slot.
pub const KEEPALIVE_REQUESTS_MAX: u32 = 1000;

/// Default milliseconds a cached answer that inotify does not watch is used before it is
/// checked again (the path opened again): changes
/// show within this time, and a hot file costs at most two checks a second per worker.
pub const REVALIDATE_MILLIS: u64 = 500;

/// Default paths the file cache holds (all workers together). Small files are held as bytes
/// with no descriptor, so this bounds the map, not descriptors (`CACHE_OPEN_FILES_SHARE` does):
/// 65,536 holds the hot set of a large site (50,000 distinct paths in the large-tree workload,
/// where 16,384 missed 47% of requests), and `--cache-mib` bounds the memory.
pub const CACHE_ENTRIES: u64 = 65_536;

/// Share of the descriptor limit (RLIMIT_NOFILE, raised to the hard limit at start-up) that
/// cached files may keep open, for all workers together: every file larger than 16 KiB keeps
/// its descriptor and a mapping. Half leaves the rest to connections, pipes and the blocking
/// engine's sockets; past it, the cache evicts another open file first.
pub const CACHE_OPEN_FILES_SHARE: u64 = 2;

/// Most files the cache keeps open and mapped, whatever the descriptor limit: below the
/// default `vm.max_map_count` (65,530 mappings per process) with room for everything else.
pub const CACHE_OPEN_FILES_MAX: u64 = 32_768;

/// Ceiling of `--cache-entries`. Past the default `vm.max_map_count` (65,530) the kernel
/// refuses further mappings; such a file is answered 503 and retried, never a crash.
pub const CACHE_ENTRIES_MAX: u64 = 1 << 20;

/// Default MiB the file cache holds (all workers together): bodies read into memory, the part
/// of mapped bodies that sendmsg faults into the process (at most 24 KiB each; larger ones are
/// spliced), and header fields, so the resident size stays bounded too.
pub const CACHE_MIB: u64 = 256;

const _: () = {
    assert!(RECV_BUFFER_COUNT.is_power_of_two());
    assert!(RECV_BUFFER_COUNT as u32 <= 32_768);
    assert!(INPUT_BUFFER_BYTES >= REQUEST_HEAD_BYTES_MAX + RECV_BUFFER_BYTES);
    assert!(BATCH_HEAD_BYTES >= RESPONSE_HEAD_BYTES_MAX);
    assert!(RESPONSE_HEAD_BYTES_MAX > REQUEST_TARGET_BYTES_MAX);
    assert!(BATCH_IOVEC_COUNT <= 1024);
    // Registered receive memory per worker stays explicit: 8 MiB.
    assert!(RECV_BUFFER_COUNT as usize * RECV_BUFFER_BYTES <= 8 * KIB * KIB);
    // A slot index must fit the 32-bit slot field of a token (see uring/token.rs).
    assert!(CONNECTIONS_PER_WORKER_MAX < (1 << 24));
};
