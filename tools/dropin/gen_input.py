"""tools/dropin/gen_input.py SIZE - write SIZE bytes of deterministic text.

The input that tools/check-dropin.sh compresses: lines of words drawn with a
skewed frequency from a fixed vocabulary by a 64-bit linear congruential
generator (Knuth's MMIX constants) with a fixed seed, so every machine and
Python version writes the same bytes, about 3-4x compressible.
"""
import sys

size = int(sys.argv[1])
M = (1 << 64) - 1
x = 0x9E3779B97F4A7C15
vocab = [
    "mutex", "futex", "wait", "wake", "lock", "unlock", "cond", "signal",
    "broadcast", "rwlock", "reader", "writer", "barrier", "spin", "once",
    "semaphore", "post", "thread", "core", "cache", "line", "atomic", "fence",
    "acquire", "release", "relaxed", "seq_cst", "kernel", "syscall", "queue",
]
out = []
n = 0
while n < size:
    words = []
    x = (x * 6364136223846793005 + 1442695040888963407) & M
    for _ in range(4 + (x >> 60)):
        x = (x * 6364136223846793005 + 1442695040888963407) & M
        r = x >> 33
        # skewed: the first words of the list far more often than the last
        w = vocab[(r % 30) * (r >> 20 & 31) // 31 % 30]
        words.append(w if r & 7 else "%s%d" % (w, r % 1000))
    line = " ".join(words) + "\n"
    out.append(line)
    n += len(line)
sys.stdout.write("".join(out)[:size])
