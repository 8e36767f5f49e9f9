//! gzip on several threads, written as ONE gzip member (the layout pigz
//! uses): the input is cut into blocks, each block is deflated on a worker
//! into a raw deflate stream that ends on a byte boundary (a sync flush:
//! an empty stored block), the last one with the final-block bit, and the
//! pieces are written in order behind one gzip header, with the CRC-32 and
//! size of the whole input in the trailer.
//!
//! One member matters: Python's `tarfile` stream mode (`r|gz`, which
//! barman-cloud-restore uses) reads only the first member of a gzip file,
//! so a multi-member `.tar.gz` would look truncated to it.
//!
//! Blocks do not share a dictionary (each starts with an empty window);
//! at 1 MiB per block that costs well under 1% of size. Memory: about
//! `2 * workers` blocks of input and their output.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

const BLOCK: usize = 1 << 20;

/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    data: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<io::Result<Vec<u8>>>,
}

/// Worker threads that deflate blocks; stopped and joined when dropped.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(workers: usize, level: u32) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..workers)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let _ = job.reply.send(deflate_block(&job.data, level, job.last));
                })
            })
            .collect();
        Pool {
            jobs: Some(tx),
            threads,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Deflates `data` as a piece of one raw deflate stream: ends on a byte
/// boundary (sync flush), or with the final block when `last`.
fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Room for incompressible data (stored blocks add 5 bytes per 64 KiB).
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            _ if !last && all_in && room_left => return Ok(out),
            _ => {}
        }
        if !room_left {
            out.reserve(out.capacity().max(4096));
        }
    }
}

pub struct ParallelGzEncoder<W: Write> {
    sink: W,
    pool: Pool,
    block: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    /// Blocks handed to the workers, oldest first.
    pending: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    header_written: bool,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(sink: W, level: u32, workers: usize) -> Self {
        let workers = workers.max(1);
        ParallelGzEncoder {
            sink,
            pool: Pool::new(workers, level),
            block: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            size: 0,
            pending: VecDeque::new(),
            max_pending: 2 * workers,
            header_written: false,
        }
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let piece = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip compression worker stopped"))??;
            self.sink.write_all(&piece)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.sink.write_all(&HEADER)?;
            self.header_written = true;
        }
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let data = std::mem::replace(
            &mut self.block,
            Vec::with_capacity(if last { 0 } else { BLOCK }),
        );
        let (reply, rx) = mpsc::sync_channel(1);
        let sent = self
            .pool
            .jobs
            .as_ref()
            .map(|jobs| jobs.send(Job { data, last, reply }).is_ok());
        if sent != Some(true) {
            return Err(io::Error::other("the gzip compression workers stopped"));
        }
        self.pending.push_back(rx);
        Ok(())
    }

    /// Compresses what is left, writes the trailer, returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.sink.write_all(&crc.to_le_bytes())?;
        self.sink.write_all(&(self.size as u32).to_le_bytes())?;
        Ok(self.sink)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (BLOCK - self.block.len()).min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    /// Nothing to do: blocks are cut at fixed sizes, and `finish` writes
    /// the rest (a flush must not end a deflate stream early).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 7u64;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                // Half text-like (compressible), half noise.
                if (i / 4096) % 2 == 0 {
                    b"abcdefgh"[i % 8]
                } else {
                    (x >> 33) as u8
                }
            })
            .collect()
    }

    fn encode(data: &[u8], workers: usize) -> Vec<u8> {
        let mut e = ParallelGzEncoder::new(Vec::new(), 1, workers);
        for piece in data.chunks(300_000) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn one_member_that_single_member_readers_read_whole() {
        for len in [0, 10, BLOCK, 3 * BLOCK + 12_345] {
            let data = sample(len);
            let gz = encode(&data, 3);
            // GzDecoder stops after the first member: all of it must be there.
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out.len(), data.len(), "len {len}");
            assert!(out == data, "len {len}");
        }
    }

    #[test]
    fn damaged_trailer_is_detected() {
        let data = sample(2 * BLOCK);
        let mut gz = encode(&data, 2);
        let n = gz.len();
        gz[n - 6] ^= 1;
        let mut out = Vec::new();
        assert!(flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .is_err());
    }
}
