//! Transports: asyncio's `Transport` and `DatagramTransport` with their hot paths in Rust, and
//! the native half of servers.
//!
//! Layering, one way: [`core`] knows the loop and nothing of a particular transport; each
//! transport builds on it; nothing in `core` imports a transport.
//! - [`core`]: what every transport shares: the link to the loop and the protocol, watching the
//!   descriptor, write flow control, the close/abort/fatal-error state machine, the per-thread
//!   read buffer, and `transport_pymethods!`, which writes the shared Python methods (groups
//!   `base`, `close`, `write`, `reading`, `socket`, `pipe`) into each transport's one
//!   `#[pymethods]` block;
//! - [`payload`]: the bytes-like argument of `write()`/`sendto()`; [`socket_info`]: extra info,
//!   closing the socket object, the unclosed-transport warning;
//! - [`stream`]: TCP and Unix stream sockets; [`write_buffer`]: its queue of unsent chunks;
//!   [`fast_write`]: its `write` as a raw vectorcall entry point;
//!   the `bytes` it hands to `data_received` are reused through [`crate::interop::spare_bytes`];
//! - [`tls_pump`]: TLS connections' record pumping between the socket and the stdlib
//!   `SSLObject` (the rest of TLS is `asyncio.sslproto`, see `_tls.py`); the stream
//!   transport feeds it and offers it its native `write` (`tls_pump::NativeWriter`), so the
//!   pump imports no transport;
//! - [`datagram`]: UDP and AF_UNIX datagrams; [`datagram_batch`]: the datagrams one
//!   iteration sends, held back for one `sendmmsg`; [`sockaddr`]: its address conversion;
//! - [`accept`]: servers' accept without a Python socket object per connection;
//!   [`server_clients`]: a server's attached connections (`close_clients`, 3.13+), compactly;
//!   [`socket_file`]: a Unix server's socket file, removed when it stops serving (3.13+),
//!   and a stale one removed before binding;
//! - [`file_send`]: the system calls of sendfile's zero-copy path (`fstat`, `sendfile`,
//!   `lseek`), native so that no `os.sendfile` runs in Python on the loop thread;
//! - [`pipe_read`], [`pipe_write`]: the read and write pipe transports (pipes, FIFOs, sockets,
//!   character devices and ptys); [`pipe_file`]: what they share (file-type check, raw
//!   `read`/`write`/`writev`, and `PipeState`, the pipe object and extra info behind the
//!   `pipe` group's methods).

pub mod accept;
pub mod buffer_window;
pub mod core;
pub mod datagram;
pub mod datagram_batch;
pub mod fast_write;
pub mod file_send;
pub mod payload;
pub mod pipe_file;
pub mod pipe_read;
pub mod pipe_write;
pub mod server_clients;
pub mod sockaddr;
pub mod socket_file;
pub mod socket_info;
pub mod stream;
pub mod tls_pump;
pub mod write_buffer;
