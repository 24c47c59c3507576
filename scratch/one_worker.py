import sys, tempfile
from pathlib import Path
sys.path.insert(0, "tools")
import bench_loader as bl
from sifar.data import build_loader
import torch, os
shards = Path(sys.argv[1])
loader = build_loader(shards, "train", num_frames=8, frame_size=192, batch_size=32, num_workers=1,
                      steps_per_epoch=int(sys.argv[2]), shuffle_buffer=64, pin_memory=False)
print(sum(len(b.keys) for b in loader))
