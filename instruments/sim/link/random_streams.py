"""The random streams of the link model: fast float32 normals and the server's per-sample normal stream.

The verification of a run draws ~3e7 returned samples, so their normals are drawn fast
(standard_normal_f32 or box_muller_32bit_f32, Box-Muller) and ahead of use by worker threads (NormalStream). Each block's
values depend only on its seed, never on the thread count or timing: a seed reproduces a run bit
for bit. The block size is part of that random-stream layout (instruments/sim/link/model.py,
secure_products, documents the whole layout).
"""

from __future__ import annotations

import collections
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

# Worker threads drawing the per-sample normals ahead (0: drawn inline). Not part of the layout. One
# worker is enough on 2 cores (the main thread and OpenBLAS use the rest); more oversubscribe.
VERIFY_THREADS = 1 if (os.cpu_count() or 1) > 1 else 0
NORMAL_WORK_MAX_PAIRS = 2**20     # largest per-thread work buffers kept by standard_normal_f32 (16 MB)
NORMAL_STREAM_BLOCK = 2**19       # normals per NormalStream block (part of the random-stream layout)
VERIFY_PREFETCH_BLOCKS = 8        # NormalStream blocks drawn ahead (16 MB; not part of the layout)


_NORMAL_WORK = threading.local()
_WORKERS: dict[int, ThreadPoolExecutor] = {}  # thread count -> the process's NormalStream workers (shared_workers)
_WORKERS_LOCK = threading.Lock()


def shared_workers(threads: int) -> ThreadPoolExecutor:
    """The process's `threads` workers that draw NormalStream blocks, started once and shared by every stream. Why
    not a pool per stream: the bench makes a stream at every acquisition that verifies a row, and a new thread's
    start waits for the scheduler to run it (0.8 ms an acquisition on the loaded 2-core machine), on the capture's
    path."""
    with _WORKERS_LOCK:
        pool = _WORKERS.get(threads)
        if pool is None:
            pool = _WORKERS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="qslab-normals")
        return pool


def _after_fork_in_child() -> None:
    """A forked child (the session's bench) has none of the parent's workers: it starts its own, under a new lock."""
    global _WORKERS_LOCK
    _WORKERS_LOCK = threading.Lock()
    _WORKERS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _cancel(pending: collections.deque) -> None:
    """A closed stream's blocks not yet started are not drawn (one being drawn ends and is dropped)."""
    for future in pending:
        if isinstance(future, Future):
            future.cancel()


def _normal_work_buffers(pairs: int):
    """Per-thread work arrays for standard_normal_f32, kept between calls: fresh large allocations
    page-fault on every call, and page faults of concurrent threads serialise in the kernel."""
    buffers = getattr(_NORMAL_WORK, "buffers", None)
    if buffers is None or buffers[0].size < pairs:
        buffers = (np.empty(pairs), np.empty(pairs, dtype=np.float32), np.empty(pairs, dtype=np.float32))
        if pairs <= NORMAL_WORK_MAX_PAIRS:
            _NORMAL_WORK.buffers = buffers
    return tuple(b[:pairs] for b in buffers)


def standard_normal_f32(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Fill the float32 C-contiguous array `out` with independent N(0, 1) samples (Box-Muller); returns out.

    Exact transform (not an approximation): with u uniform on (0, 1] (float64, 53-bit) and v uniform
    on [0, 1), sqrt(-2 ln u) (cos 2 pi v, sin 2 pi v) are two independent standard normals; the
    first half of `out` gets the cosines, the second half the sines. The float64 radius bounds
    |z| <= 8.6 (probability beyond it ~1e-17); the angle is drawn in float32 (resolution 4e-7 rad,
    below float32's own output resolution). It needs about 4 ns per sample against 8.5 ns for
    numpy's float32 ziggurat here, which matters for the ~3e7 returned samples of a verified run.
    """
    if out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous float32 array")
    flat = out.reshape(-1)
    n = flat.size
    pairs = (n + 1) // 2
    radius, radius32, angle = _normal_work_buffers(pairs)
    rng.random(out=radius)                  # [0, 1)
    np.subtract(1.0, radius, out=radius)    # (0, 1]: ln never sees 0
    np.log(radius, out=radius)
    radius *= -2.0
    np.sqrt(radius, out=radius)
    radius32[...] = radius
    rng.random(dtype=np.float32, out=angle)
    angle *= np.float32(2.0 * np.pi)
    head = flat[:pairs]
    np.cos(angle, out=head)
    head *= radius32
    np.sin(angle, out=angle)
    angle *= radius32
    flat[pairs:] = angle[:n - pairs]
    return out


def box_muller_32bit_f32(bit_generator: np.random.BitGenerator, out: np.ndarray, scale: float = 1.0,
                         work: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Fill the float32 C-contiguous `out` with N(0, scale^2) samples: Box-Muller on 32-bit uniforms, all float32.

    Why a second transform: standard_normal_f32 spends most of its time on float64 uniforms and the
    float64 radius; this one takes one raw 64-bit word per pair (high 32 bits: u = (h + 1/2) 2^-32 in
    (0, 1] for the radius sqrt(-2 ln u), low 32 bits: the angle), about half the time with SFC64. Exact
    apart from the 2^-32 grid: |z| <= 6.8 (probability beyond it 1e-11, i.e. ~1e-3 samples in a 10k-image
    run of 1.2e8); float32 rounds u near 1 to its 6e-8 resolution, which moves only radii below 4e-4
    (probability 1e-7), and the angle's 2^-24 turn resolution is below float32's own output resolution.
    The first half of `out` gets the cosines, the second half the sines. `work`: two float32 arrays of at least
    half `out`'s size for the radius and angle (the bench's renderer keeps its own), else per-thread ones.
    """
    if out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous float32 array")
    flat = out.reshape(-1)
    n = flat.size
    pairs = (n + 1) // 2
    words = bit_generator.random_raw(pairs).view(np.uint32)  # little-endian: [low, high] per word
    radius, angle = (_normal_work_buffers(pairs)[1:] if work is None else (work[0][:pairs], work[1][:pairs]))
    np.copyto(radius, words[1::2], casting="unsafe")
    radius += np.float32(0.5)
    radius *= np.float32(2.0**-32)
    np.log(radius, out=radius)
    radius *= np.float32(-2.0 * scale * scale)
    np.sqrt(radius, out=radius)
    np.copyto(angle, words[0::2], casting="unsafe")
    angle *= np.float32(2.0 * np.pi * 2.0**-32)
    head = flat[:pairs]
    np.cos(angle, out=head)
    head *= radius
    np.sin(angle, out=angle)
    np.multiply(angle[:n - pairs], radius[:n - pairs], out=flat[pairs:])
    return out


def _draw_pcg64(child: np.random.SeedSequence, buffer: np.ndarray) -> np.ndarray:
    return standard_normal_f32(np.random.Generator(np.random.PCG64(child)), buffer)


def _draw_sfc64(child: np.random.SeedSequence, buffer: np.ndarray) -> np.ndarray:
    return box_muller_32bit_f32(np.random.SFC64(child), buffer)


# A NormalStream's block sampler (part of its random-stream layout): "pcg64", each block from a PCG64 Generator
# through standard_normal_f32 (a NormalStream's default); "sfc64", each block from SFC64 through
# box_muller_32bit_f32, about twice as fast (model.FAST_SAMPLER: secure_products' own streams, i.e. the bench's
# acquisitions, and LinkEngine's shared stream, i.e. qslab simulate's physics mode).
BLOCK_SAMPLERS = {"pcg64": _draw_pcg64, "sfc64": _draw_sfc64}


class NormalStream:
    """The server's per-sample standard normals (float32), drawn ahead by worker threads.

    Stream layout: SeedSequence(entropy).spawn(1), called once per block in order, gives block k
    its own child seed, from which the `sampler` (BLOCK_SAMPLERS) draws NORMAL_STREAM_BLOCK normals;
    `fill` hands out the concatenation of the blocks in order, whatever the sizes asked for. The
    values therefore depend only on the entropy (drawn from the caller's Generator), never on the
    thread count or timing. Up to `prefetch` blocks are drawn ahead by `threads` worker threads (0:
    drawn inline when needed; numpy releases the GIL in its fills and ufuncs), the process's
    shared_workers, also between calls, so that the generation overlaps the rest of the inference.
    close() (or garbage collection) cancels the blocks not yet started. `total` (normals the owner
    will take, or None) stops the prefetch at the last block needed, so that no worker draws a block
    nobody reads (the values are unchanged).
    """

    def __init__(self, entropy, threads: int = None, prefetch: int = None, total: int = None,
                 sampler: str = "pcg64"):
        if sampler not in BLOCK_SAMPLERS:
            raise ValueError(f"sampler {sampler!r}; expected one of {tuple(BLOCK_SAMPLERS)}")
        self._draw = BLOCK_SAMPLERS[sampler]
        threads = VERIFY_THREADS if threads is None else int(threads)
        self._sequence = np.random.SeedSequence(entropy)
        self._prefetch = VERIFY_PREFETCH_BLOCKS if prefetch is None else int(prefetch)
        self._unsubmitted = None if total is None else -(-int(total) // NORMAL_STREAM_BLOCK)  # blocks left to queue
        self._pool = shared_workers(threads) if threads > 0 else None
        self._pending = collections.deque()  # futures (threaded) or child seeds (inline), in block order
        self._finalizer = None if self._pool is None else weakref.finalize(self, _cancel, self._pending)
        self._spare = []                      # consumed block arrays, reused
        self._block = None
        self._offset = NORMAL_STREAM_BLOCK

    def _submit(self):
        if self._unsubmitted is not None:
            self._unsubmitted -= 1
        child = self._sequence.spawn(1)[0]
        if self._pool is None:
            self._pending.append(child)
        else:
            buffer = self._spare.pop() if self._spare else np.empty(NORMAL_STREAM_BLOCK, dtype=np.float32)
            self._pending.append(self._pool.submit(self._draw, child, buffer))

    def _next_block(self):
        if self._block is not None:
            self._spare.append(self._block)
        if not self._pending:
            self._submit()
        item = self._pending.popleft()
        if self._pool is None:
            buffer = self._spare.pop() if self._spare else np.empty(NORMAL_STREAM_BLOCK, dtype=np.float32)
            self._block = self._draw(item, buffer)
        else:
            self._block = item.result()
        self._offset = 0

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Write the next out.size normals of the stream into the float32 C-contiguous `out`."""
        if out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous float32 array")
        flat = out.reshape(-1)
        position = 0
        while position < flat.size:
            if self._offset == NORMAL_STREAM_BLOCK:
                self._next_block()
            take = min(NORMAL_STREAM_BLOCK - self._offset, flat.size - position)
            flat[position:position + take] = self._block[self._offset:self._offset + take]
            position += take
            self._offset += take
        self.prefetch()
        return out

    def prefetch(self):
        """Queue blocks up to the prefetch depth (no-op without worker threads)."""
        if self._pool is not None:
            while len(self._pending) < self._prefetch and (self._unsubmitted is None or self._unsubmitted > 0):
                self._submit()

    def close(self):
        if self._finalizer is not None:
            self._finalizer()


def new_normal_stream(rng: np.random.Generator, threads: int = None, prefetch: int = None,
                      total: int = None, sampler: str = "pcg64") -> NormalStream:
    """A NormalStream seeded by one 256-bit entropy (4 uint64) drawn from rng."""
    return NormalStream(rng.integers(0, 2**64, size=4, dtype=np.uint64).tolist(), threads, prefetch, total, sampler)


class LazyNormalStream:
    """A NormalStream whose entropy is drawn from rng when it is first used (LinkEngine's shared stream)."""

    def __init__(self, rng: np.random.Generator, sampler: str = "pcg64"):
        if sampler not in BLOCK_SAMPLERS:
            raise ValueError(f"sampler {sampler!r}; expected one of {tuple(BLOCK_SAMPLERS)}")
        self._rng, self._stream, self._sampler = rng, None, sampler

    def _get(self) -> NormalStream:
        if self._stream is None:
            self._stream = new_normal_stream(self._rng, sampler=self._sampler)
        return self._stream

    def fill(self, out):
        return self._get().fill(out)

    def prefetch(self):
        self._get().prefetch()

    def close(self):
        if self._stream is not None:
            self._stream.close()
