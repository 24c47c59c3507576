import resource, sys, time, tempfile
from pathlib import Path
sys.path.insert(0, "tools")
import bench_loader as bl
from sifar.data import build_loader
import torch
torch.set_num_threads(1)
work = Path(tempfile.mkdtemp())
_, shards = bl.make_shards(work, 24, 90)
def run(batches):
    loader = build_loader(shards, "train", num_frames=8, frame_size=192, batch_size=32, num_workers=0,
                          steps_per_epoch=batches, shuffle_buffer=64, pin_memory=False)
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.process_time()
    n = sum(len(b.keys) for b in loader)
    r1 = resource.getrusage(resource.RUSAGE_SELF); t1 = time.process_time()
    return n, r1.ru_minflt - r0.ru_minflt, t1 - t0
for b in (3, 13, 13):
    n, f, t = run(b)
    print(b, n, "faults/clip", f / n, "ms/clip", 1000 * t / n)
def run_w(batches):
    loader = build_loader(shards, "train", num_frames=8, frame_size=192, batch_size=32, num_workers=1,
                          steps_per_epoch=batches, shuffle_buffer=64, pin_memory=False)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = sum(len(b.keys) for b in loader)
    del loader
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return n, r1.ru_minflt - r0.ru_minflt, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime), r1.ru_stime - r0.ru_stime
res = {b: run_w(b) for b in (3, 23, 3, 23)}
for b in (3, 23):
    pass
a = run_w(3); c = run_w(23)
n = c[0] - a[0]
print("worker: faults/clip", (c[1] - a[1]) / n, "ms/clip", 1000 * (c[2] - a[2]) / n, "sys ms/clip", 1000 * (c[3] - a[3]) / n)
