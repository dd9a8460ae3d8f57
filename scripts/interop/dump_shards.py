"""Prints the samples of an eda feature-shard folder as JSON: {"id": [token ids], ...}.

    python dump_shards.py DATASET_DIR

Reads every `*.safetensors` shard with the format tag `eda-features-v1` (the safetensors layout
is parsed by hand: no packages needed) and exits non-zero when a sample id occurs twice.
"""

import glob
import json
import os
import struct
import sys


def shard_samples(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "eda-features-v1":
        return []
    ids = json.loads(meta["sample_ids"])

    def tensor(name, fmt, width):
        start, end = header[name]["data_offsets"]
        raw = data[start:end]
        return list(struct.unpack(f"<{len(raw) // width}{fmt}", raw))

    tokens = tensor("input_ids", "I", 4)
    offsets = tensor("sample_offsets", "Q", 8)
    return [(sid, tokens[offsets[i] : offsets[i + 1]]) for i, sid in enumerate(ids)]


def main():
    out = {}
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors"))):
        for sid, toks in shard_samples(path):
            if sid in out:
                sys.exit(f"duplicate sample id {sid} in {path}")
            out[sid] = toks
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
