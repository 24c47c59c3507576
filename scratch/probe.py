import json, sys
from argparse import Namespace
sys.path.insert(0, "tools")
import bench_train as b
import torch._inductor.config as ic

def has(key):
    obj = ic
    for part in key.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return "absent"
    return obj

keys = ["mix_order_reduction", "triton.mix_order_reduction", "aggressive_fusion", "loop_ordering_after_fusion",
        "triton.cudagraphs", "max_autotune_pointwise", "benchmark_fusion", "triton.prefer_nd_tiling"]
print({k: has(k) for k in keys}, flush=True)
args = Namespace(num_classes=174, warmup=4, steps=15, profile="", json=None, batch=32, peak_tflops=800.0)
for name, opts in json.loads(sys.argv[1]).items():
    opts = {k: v for k, v in opts.items() if has(k) != "absent"}
    if not opts:
        print(name, "skipped: no such option", flush=True)
        continue
    print(name, opts, flush=True)
    v = b.Variant(name, "flex", True, True, True, compile_options={**b.COMPILE_OPTIONS, **opts})
    b.measure("SIFAR-B-12", v, "train", args)
