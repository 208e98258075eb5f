//! A single-threaded io_uring TCP echo server, no Python: the io_uring counterpart of the
//! epoll floor (`../shared/native-echo`, mio), written to measure whether io_uring lowers the
//! server's CPU per echoed request enough to be worth building into ferroloop's poller
//! (issue #18, "Echo at the floor"). It is a measuring instrument, not part of the library.
//!
//! Design (one ring, one thread, no SQPOLL, so all of its work is charged to this process):
//! * one multishot accept on the listening socket: one SQE, a CQE per new connection;
//! * one multishot receive per connection, selecting buffers from a provided-buffer ring
//!   (`IORING_REGISTER_PBUF_RING`): the kernel picks a free buffer as data arrives, so no read
//!   is ever issued that ends in EAGAIN and no buffer is tied to an idle connection;
//! * one send per received chunk, straight from the provided buffer (no copy); the buffer goes
//!   back into the ring when its send has completed. At most one send is in flight per
//!   connection, so a partial send is finished before the next chunk goes out (byte order kept);
//! * the loop is `io_uring_enter(submit, wait for 1)` then drain the completion queue: one
//!   system call per loop iteration, whatever the number of connections served in it.
//!
//! Setup flags: `--setup defer` (default) asks for `SINGLE_ISSUER | DEFER_TASKRUN` (completion
//! work runs only inside our own `io_uring_enter`, never interrupting user code); `--setup coop`
//! for `COOP_TASKRUN`; `--setup plain` for none.
//!
//! Usage: `native-uring-echo [HOST:PORT] [--setup defer|coop|plain] [--buf-size BYTES]
//! [--bufs N]`; prints `LISTEN <addr>` once bound (like `native-echo`) and serves until killed.
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

/// Buffer group id of the provided-buffer ring.
const GROUP: u16 = 0;
/// `user_data` of the multishot accept.
const ACCEPT_DATA: u64 = u64::MAX;
/// Low bits of `user_data`: what a connection's completion is for.
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_BITS: u32 = 2;

/// The provided-buffer ring: `count` buffers of `size` bytes, and the shared ring of
/// `io_uring_buf` entries the kernel takes them from.
struct BufferRing {
    /// Page-aligned mapping of `count` 16-byte entries; the tail lives in entry 0's `resv`.
    entries: *mut types::BufRingEntry,
    /// Backing store of the buffers, `count * size` bytes, never moved.
    memory: Vec<u8>,
    size: usize,
    mask: u16,
    /// Our producer index; published to the kernel by [`BufferRing::publish`].
    tail: u16,
}

impl BufferRing {
    /// Map the ring, fill it with every buffer and register it with `ring` as [`GROUP`].
    fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<Self> {
        assert!(count.is_power_of_two(), "--bufs must be a power of two");
        let bytes = count as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping, checked for failure; page-aligned as the
        // kernel requires for a buffer ring.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if entries == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut this = BufferRing {
            entries: entries.cast(),
            memory: vec![0u8; count as usize * size],
            size,
            mask: count - 1,
            tail: 0,
        };
        for bid in 0..count {
            this.give_back(bid);
        }
        this.publish();
        // SAFETY: the mapping holds `count` entries and lives as long as the process (the
        // ring is never unregistered before exit).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, GROUP, 0)?;
        }
        Ok(this)
    }

    /// Put buffer `bid` back at our tail (visible to the kernel after [`BufferRing::publish`]).
    fn give_back(&mut self, bid: u16) {
        let index = (self.tail & self.mask) as usize;
        // SAFETY: `index` is below the entry count; only addr/len/bid are written, so entry 0's
        // `resv` (the shared tail) is left alone.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(self.buffer(bid).as_ptr() as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every buffer given back so far visible to the kernel (one release store).
    fn publish(&self) {
        // SAFETY: the tail field of a registered ring is a u16 the kernel reads atomically.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.entries) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes of buffer `bid`.
    fn buffer(&self, bid: u16) -> &[u8] {
        let start = bid as usize * self.size;
        &self.memory[start..start + self.size]
    }
}

/// One accepted connection.
struct Conn {
    fd: RawFd,
    /// Received chunks not yet fully sent: (buffer id, bytes already sent, length).
    queue: VecDeque<(u16, u32, u32)>,
    /// A send SQE is in flight (for `queue.front()`).
    sending: bool,
    /// The multishot receive is still armed.
    receiving: bool,
    /// End of stream or an error: close once nothing is in flight.
    closing: bool,
}

/// The whole server: the ring, its buffers, the connections by slot.
struct Server {
    ring: IoUring,
    bufs: BufferRing,
    listener: RawFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Completions copied out of the CQ before they are handled (the handlers push SQEs).
    batch: Vec<(u64, i32, u32)>,
}

impl Server {
    /// Queue one SQE, submitting first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every buffer an SQE points at (provided buffers, `memory`) outlives it.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            self.ring.submit().expect("io_uring_enter (submit)");
        }
    }

    fn arm_accept(&mut self) {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener))
            .build()
            .user_data(ACCEPT_DATA);
        self.push(entry);
    }

    fn arm_recv(&mut self, slot: usize) {
        let fd = self.conns[slot].as_ref().expect("conn").fd;
        let entry = opcode::RecvMulti::new(types::Fd(fd), GROUP)
            .build()
            .user_data(((slot as u64) << KIND_BITS) | KIND_RECV);
        self.push(entry);
        self.conns[slot].as_mut().expect("conn").receiving = true;
    }

    /// Send what is left of the connection's first queued chunk.
    fn send_front(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("conn");
        let &(bid, sent, len) = conn.queue.front().expect("queued chunk");
        conn.sending = true;
        let fd = conn.fd;
        let data = &self.bufs.buffer(bid)[sent as usize..len as usize];
        let entry = opcode::Send::new(types::Fd(fd), data.as_ptr(), data.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(((slot as u64) << KIND_BITS) | KIND_SEND);
        self.push(entry);
    }

    fn on_accept(&mut self, result: i32, flags: u32) {
        if result >= 0 {
            let fd = result;
            let one: libc::c_int = 1;
            // SAFETY: `fd` is the socket just accepted; the option value is a live c_int.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let conn = Conn {
                fd,
                queue: VecDeque::new(),
                sending: false,
                receiving: false,
                closing: false,
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.conns[slot] = Some(conn);
                    slot
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            self.arm_recv(slot);
        } else {
            eprintln!("accept: {}", io::Error::from_raw_os_error(-result));
        }
        if !cqueue::more(flags) {
            self.arm_accept();
        }
    }

    fn on_recv(&mut self, slot: usize, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        let conn = self.conns[slot].as_mut().expect("recv for a live conn");
        conn.receiving = more;
        if result > 0 {
            let bid = cqueue::buffer_select(flags).expect("recv without a buffer");
            conn.queue.push_back((bid, 0, result as u32));
            let idle = !conn.sending;
            if idle {
                self.send_front(slot);
            }
            if !more {
                self.arm_recv(slot);
            }
            return;
        }
        if result == -libc::ENOBUFS && !conn.closing {
            // Every buffer is queued for sending: receive again; buffers come back as sends
            // complete.
            if !more {
                self.arm_recv(slot);
            }
            return;
        }
        if result < 0 && result != -libc::ECANCELED {
            eprintln!("recv: {}", io::Error::from_raw_os_error(-result));
        }
        conn.closing = true;
        self.close_if_idle(slot);
    }

    fn on_send(&mut self, slot: usize, result: i32) {
        let conn = self.conns[slot].as_mut().expect("send for a live conn");
        conn.sending = false;
        if result < 0 {
            // Peer gone: drop what is queued, stop the receive, close when it has ended.
            for (bid, _, _) in conn.queue.drain(..) {
                self.bufs.give_back(bid);
            }
            conn.closing = true;
            // SAFETY: shutting down our own socket; ends the multishot receive with EOF.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
            self.close_if_idle(slot);
            return;
        }
        let front = conn.queue.front_mut().expect("sent chunk");
        front.1 += result as u32;
        if front.1 == front.2 {
            let bid = front.0;
            conn.queue.pop_front();
            self.bufs.give_back(bid);
        }
        let more_queued = !conn.queue.is_empty();
        if more_queued {
            self.send_front(slot);
        } else {
            self.close_if_idle(slot);
        }
    }

    /// Close a closing connection once neither its receive nor a send is in flight.
    fn close_if_idle(&mut self, slot: usize) {
        let conn = self.conns[slot].as_ref().expect("conn");
        if !conn.closing || conn.receiving || conn.sending {
            return;
        }
        if !conn.queue.is_empty() {
            // End of stream with data still to echo: send it first.
            self.send_front(slot);
            return;
        }
        let conn = self.conns[slot].take().expect("conn");
        // SAFETY: no SQE refers to this descriptor any more.
        unsafe { libc::close(conn.fd) };
        self.free.push(slot);
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        loop {
            self.bufs.publish();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let mut batch = std::mem::take(&mut self.batch);
            batch.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
            );
            for &(data, result, flags) in &batch {
                if data == ACCEPT_DATA {
                    self.on_accept(result, flags);
                    continue;
                }
                let slot = (data >> KIND_BITS) as usize;
                match data & ((1 << KIND_BITS) - 1) {
                    KIND_RECV => self.on_recv(slot, result, flags),
                    KIND_SEND => self.on_send(slot, result),
                    _ => unreachable!("unknown user_data {data:#x}"),
                }
            }
            batch.clear();
            self.batch = batch;
        }
    }
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:0".to_string();
    let mut setup = "defer".to_string();
    let mut buf_size = 64 * 1024usize;
    let mut bufs = 256u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--setup" => setup = args.next().expect("--setup value"),
            "--buf-size" => buf_size = args.next().expect("value").parse().expect("number"),
            "--bufs" => bufs = args.next().expect("value").parse().expect("number"),
            _ if !arg.starts_with("--") => addr = arg,
            _ => panic!("unknown option {arg}"),
        }
    }
    let mut builder = IoUring::builder();
    builder.setup_cqsize(4096);
    match setup.as_str() {
        "defer" => {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        "coop" => {
            builder.setup_coop_taskrun();
        }
        "plain" => {}
        other => panic!("unknown --setup {other}"),
    }
    let ring = builder.build(1024)?;
    let bufs = BufferRing::new(&ring, bufs, buf_size)?;
    let listener = TcpListener::bind(addr.as_str())?;
    let mut stdout = io::stdout();
    writeln!(stdout, "LISTEN {}", listener.local_addr()?)?;
    stdout.flush()?;
    let mut server = Server {
        ring,
        bufs,
        listener: listener.as_raw_fd(),
        conns: Vec::new(),
        free: Vec::new(),
        batch: Vec::with_capacity(4096),
    };
    server.run()
}
