#!/usr/bin/env python3
"""tools/docs-check.py - fail when a page cites something that does not exist.

Run by `make docs-check` (and by `make test`).  For README.md and every
docs/*.md it checks:
  - test names written `suite::name` (Criterion's report format) against the
    Test(suite, name) definitions in tests/ and tests/dropin/;
  - repository paths (src/, include/, tests/, stress/, tools/, docs/,
    examples/, python/, man/, arch/, .ci/) against the tree; a path with a
    wildcard or an ellipsis is skipped, as are paths under build/;
  - `make TARGET` against the Makefile's targets;
  - `--option` of ksync-bench and ksync-stress against the strings their
    option parsers compare (stress/bench_main.c, stress/main.c);
  - links [text](page.md) between pages, and to pictures (.svg, .png);
  - any citation of a file outside the repository (../shared/...);
  - commits: a hexadecimal id of 7 to 40 digits outside code blocks must
    name a commit of this repository (git), unless another project (musl,
    liburcu, glibc, ...) is named just before it;
and that every page (docs/*.md), picture (docs/pictures/*.svg) and plot
(docs/plots/*.svg) can be reached by links from README.md; that every picture
says what its source says (tools/pictures.sh --check: the same labels in
the same order, where graphviz and mscgen are installed); and that every public header has its man page (man/ks_NAME.3; common.h:
man/ksync.3), each rendering without a warning where groff is installed.
Each failure is printed as page:line: what; the exit status is 1 if any.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def pages():
    out = ["README.md"]
    for name in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        if name.endswith(".md"):
            out.append("docs/" + name)
    return out


def test_names():
    names = set()
    for d in ("tests", "tests/dropin"):
        for name in os.listdir(os.path.join(ROOT, d)):
            if not name.endswith((".c", ".cc")):
                continue
            text = read(d + "/" + name)
            for m in re.finditer(r"^\s*ParameterizedTest\([^,]*,\s*(\w+),\s*(\w+)", text, re.M):
                names.add(m.group(1) + "::" + m.group(2))
            for m in re.finditer(r"^\s*Test\((\w+),\s*(\w+)", text, re.M):
                suites = [m.group(1)]
                if m.group(1) == "KS_HPP_SUITE":  # tests/test_hpp.cc is built as both
                    suites = ["hpp17", "hpp20"]
                for suite in suites:
                    names.add(suite + "::" + m.group(2))
    return names


def make_targets():
    targets = set()
    for line in read("Makefile").splitlines():
        m = re.match(r"^([A-Za-z0-9_.%/$()-][^:=]*?):(?!=)", line)
        if m:
            for t in m.group(1).split():
                targets.add(t)
    return targets


def options(path):
    # getopt_long tables: {"name", required_argument, ...}
    return {"--" + o for o in re.findall(r'\{"([a-z][a-z0-9-]*)",\s*(?:no|required|optional)_argument', read(path))} | {"--help"}


SUITE_RE = re.compile(r"`((?:[a-z_0-9]+)::[A-Za-z_0-9]+)`")
# a bare suite::name outside backticks, as pages also write them in prose
BARE_RE = re.compile(r"(?<![\w:/.])([a-z][a-z_0-9]*::[a-z][a-z_0-9]{3,})\b")
PATH_RE = re.compile(r"(?<![\w./-])((?:src|include|tests|stress|tools|docs|examples|python|man|arch|\.ci)/[A-Za-z0-9_./-]*[A-Za-z0-9_])")
# `make target` in prose (backticked), or a command line in a code block
MAKE_TICK_RE = re.compile(r"`make\s+((?:[A-Z_]+=\S+\s+)*)([a-z][a-z0-9-]*)")
MAKE_CODE_RE = re.compile(r"^\s*(?:\$\s+)?make\s+((?:-j\d+\s+|[A-Z_]+=\S+\s+)*)([a-z][a-z0-9/-]*)")
# words near a path that say it is another project's file
EXTERNAL = re.compile(r"musl|glibc|liburcu|urcu|Concurrency Kit|\bCK\b|ck_|\bGo\b|Linux|kernel|nptl|Rust|abseil|folly|nsync|Criterion|userspace-rcu|upstream", re.I)
OPT_RE = re.compile(r"\b(ksync-bench|ksync-stress)((?:\s+(?:--[a-z][a-z0-9-]*(?:[ =][^\s`|-][^\s`|]*)?|[^\s`|-]\S*))*)")
LINK_RE = re.compile(r"\]\(([A-Za-z0-9_./-]+\.(?:md|svg|png|dot|gp))(?:#[^)]*)?\)")  # pages and pictures
# C++ and other namespaces that are not test suites
NOT_SUITES = {"ks", "std", "ksync"}


COMMIT_RE = re.compile(r"(?<![\w/.#=&-])([0-9a-f]{7,40})(?![\w/-])")
# another project named shortly before a commit id: the id is that project's
OTHER_PROJECT = re.compile(r"musl|liburcu|urcu|glibc|SBCL|kernel|Linux|FreeBSD|Go\b|Rust|abseil|folly|nsync|Criterion|CK\b|Concurrency Kit|https?://", re.I)


def git_commits_checkable():
    if not shutil.which("git") or not os.path.exists(os.path.join(ROOT, ".git")):
        return False
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--is-shallow-repository"], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "false"


def is_commit(sha, cache={}):
    if sha not in cache:
        r = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", sha + "^{commit}"], capture_output=True)
        cache[sha] = r.returncode == 0
    return cache[sha]


def reachable():
    """Pages and pictures reached from README.md by following links."""
    seen = set()
    todo = ["README.md"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        if not page.endswith(".md") or not os.path.exists(os.path.join(ROOT, page)):
            continue
        for link in LINK_RE.findall(read(page)):
            target = os.path.normpath(os.path.join(os.path.dirname(page), link))
            if target not in seen:
                todo.append(target)
    return seen


def check_reach():
    seen = reachable()
    bad = 0
    wanted = pages()
    for d in ("docs/pictures", "docs/plots"):
        if os.path.isdir(os.path.join(ROOT, d)):
            wanted += sorted(d + "/" + f for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(".svg"))
    for w in wanted:
        if w not in seen:
            print(f"{w}: not reachable by links from README.md")
            bad += 1
    return bad


def check_pictures():
    if not (shutil.which("dot") and shutil.which("mscgen")):
        return 0
    r = subprocess.run(["sh", os.path.join(ROOT, "tools/pictures.sh"), "--check"], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout.strip() or r.stderr.strip())
        return 1
    return 0


def check_man():
    """A man page per public header (man/ks_NAME.3; common.h is ksync(3)),
    and, where groff is installed, every page renders without a warning."""
    bad = 0
    for h in sorted(glob.glob(os.path.join(ROOT, "include/ksync/*.h"))):
        name = os.path.basename(h)[:-2]
        page = "man/ksync.3" if name == "common" else f"man/ks_{name}.3"
        if not os.path.exists(os.path.join(ROOT, page)):
            print(f"include/ksync/{name}.h: no man page {page}")
            bad += 1
    if shutil.which("groff"):
        for page in sorted(glob.glob(os.path.join(ROOT, "man/*.[13]"))):
            r = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
            if r.returncode != 0 or r.stderr.strip():
                print(f"{os.path.relpath(page, ROOT)}: groff: {r.stderr.strip()[:200]}")
                bad += 1
    return bad


def main():
    tests = test_names()
    suites = {t.split("::")[0] for t in tests}
    targets = make_targets()
    opts = {
        "ksync-bench": options("stress/bench_main.c") | options("stress/bench.c"),
        "ksync-stress": options("stress/main.c") | options("stress/harness.c"),
    }
    bad = 0
    commits_ok = git_commits_checkable()
    for page in pages():
        in_code = False
        text = read(page)
        starts = [0]
        for line in text.splitlines():
            starts.append(starts[-1] + len(line) + 1)
        for n, line in enumerate(text.splitlines(), 1):
            offset = starts[n - 1]
            if line.startswith("```"):
                in_code = not in_code

            def fail(what):
                nonlocal bad
                bad += 1
                print(f"{page}:{n}: {what}")

            if not in_code and commits_ok:
                for cm in COMMIT_RE.finditer(line):
                    sha = cm.group(1)
                    if not (re.search("[a-f]", sha) and re.search("[0-9]", sha)):
                        continue  # a word or a number, not an id
                    before = text[max(0, offset + cm.start() - 160):offset + cm.start()]
                    if OTHER_PROJECT.search(before) or is_commit(sha):
                        continue
                    fail(f"no commit {sha} in this repository")
            if "../shared" in line:
                fail("cites a file outside the repository (../shared)")
            for m in set(SUITE_RE.findall(line)) | set(BARE_RE.findall(line)):
                suite = m.split("::")[0]
                if suite not in suites or m in tests:
                    continue  # not a test suite (a C++ name), or a real test
                if m.endswith("_") and any(t.startswith(m) for t in tests):
                    continue  # a family: rwlock::prefer_reader_*
                fail(f"no test {m}")
            for pm in PATH_RE.finditer(line):
                p = pm.group(1).rstrip(".")
                after = line[pm.end():pm.end() + 1]
                if after in ("*", "<", "{") or p.endswith(("_", "/")) or "..." in p:
                    continue  # a pattern, not a file
                parent = os.path.dirname(p)
                if p.startswith("include/") and not p.startswith("include/ksync"):
                    continue  # another project's header (ck_ring.h, urcu/...)
                if not os.path.isdir(os.path.join(ROOT, parent)):
                    continue  # another project's tree (musl's src/thread/...)
                if EXTERNAL.search(line[max(0, pm.start() - 80):pm.start()]):
                    continue
                if not os.path.exists(os.path.join(ROOT, p)):
                    fail(f"no file {p}")
            makes = MAKE_TICK_RE.findall(line) + (MAKE_CODE_RE.findall(line) if in_code else [])
            for _, t in makes:
                if t not in targets:
                    fail(f"no make target {t}")
            for prog, rest in OPT_RE.findall(line):
                for o in re.findall(r"(--[a-z][a-z0-9-]*)", rest):
                    if o not in opts[prog]:
                        fail(f"{prog} has no option {o}")
            for link in LINK_RE.findall(line):
                base = os.path.dirname(page)
                target = os.path.normpath(os.path.join(base, link))
                if not link.startswith("http") and not os.path.exists(os.path.join(ROOT, target)):
                    fail(f"broken link {link}")
    bad += check_reach()
    bad += check_pictures()
    bad += check_man()
    if bad:
        print(f"docs-check: {bad} problem(s): citations of things that do not exist, pages or pictures out of reach, stale pictures, man pages")
        return 1
    print(f"docs-check: {len(pages())} pages, every test, file, make target, option, commit and link they cite exists; "
          "every page, picture and plot is reachable from README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
