"""Benchmark: grading a class with ``autograder/cnnlab_grade.py``, sandboxed, 1 and 2 at a time.

What it measures, in one run on this machine: a temporary course made by ``setup``
(``quick`` profile, the course model trained once or given by ``--checkpoint``), then
``--n`` made-up submissions (default 40: a mix of correct answers in several forms,
wrong answers, blank notebooks and broken ones: an exception, a missing import, an
endless loop interrupted at the student-cell limit, a kernel that exits) graded by
``grade_students``, each kernel in the bubblewrap sandbox:

- ``--jobs 1`` and ``--jobs 2`` (a local Dask cluster of 1 and 2 worker processes), and
  two workers started as ``dask scheduler`` / ``dask worker`` commands (``grade
  --scheduler``): wall seconds for the class, seconds per submission, the speed-up of 2
  workers (goal: at least 1.7x);
- peak memory per kernel (its cgroup's peak where cgroups are used, else the sandbox
  wrapper's ``RUSAGE_CHILDREN`` maximum RSS);
- the sandbox's overhead: the first ``--subset`` submissions (default 8, to keep the
  whole run near 12 minutes here) graded again with ``--no-sandbox`` at ``--jobs 1``,
  against the same submissions' sandboxed times from the ``--jobs 1`` run, per
  submission (nbgrader's own autograde time in each worker, from the repair to the
  re-check; goal: under 10 %);
- what setup's saved results (step 4) save: the first ``--no-memo-subset`` submissions
  (default 6) graded again at ``--jobs 1`` on a second course set up with ``--no-memo``,
  nbgrader's time per submission against the same submissions' at ``--jobs 1``;
- an estimate, stated as one, for 300 students on a 16-core machine: 300 x the seconds
  per submission at ``--jobs 1`` / (16 x the parallel efficiency measured at 2 jobs),
  and 16 x the peak memory per kernel; the same for 3,000 students on 64 cores.

On what: the data of ``--data`` (CIFAR-10 folder or ImageFolder archive; default
``$CNNLAB_DATA``, else made-up images, said so); timings do not depend on the weights.
The load average is printed: run it on an otherwise idle machine.

Reproduce (from the repository root, nbgrader's environment active, bubblewrap
installed; about 31 minutes on the project's 2-core CPU for the figures of the instructor
guide, 2026-12-07):

    OMP_NUM_THREADS=1 python benchmarks/bench_autograde.py --n 12 --subset 4 \\
        --no-memo-subset 4 --checkpoint ~/.cache/cnnlab/checkpoints/cnnlab-quick.pt
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
#: Exercises 8 and 10-12 answered the same way in every correct submission
NEWER = {
    "ex10_answer": "import torch\nout = []\nh = model[13].register_forward_hook(lambda m, i, o: "
                   "out.append(o))\nmodel.eval()\nwith torch.no_grad():\n    model(cnnlab.normalize("
                   "ex10_images).to(device))\nh.remove()\nhooked = out[0]",
    "ex11_answer": "ranked = np.argsort(-features[:len(ex11_images), ex11_unit])[:ex11_k]",
    "ex12_answer": "import torch\nmodel.eval()\nx = cnnlab.normalize(ex12_image[None]).to(device)"
                   ".requires_grad_()\nmodel[:14](x)[0, ex12_unit].backward()\ngradient = x.grad[0]",
    "ex8_answer": "import torch\nmodel.eval()\nwith torch.no_grad():\n    contribution = (model[13]"
                  ".weight[ex8_unit].view(64, 8, 8) * model[:12](cnnlab.normalize(ex8_image[None]))"
                  ".view(64, 8, 8)).sum(0)",
}
CORRECT = [
    {"ex1_answer": "n_filters = model[0].out_channels", "ex2_answer": "conv2_weights = model[2].weight",
     "ex4_answer": "extractor = model[:14]", "ex5_answer": "units = [1, 2, 4, 14, 23, 29, 127]",
     **NEWER},
    {"ex1_answer": "n_filters = len(model[0].weight)", "ex2_answer": "conv2_weights = model[2].weight.detach().numpy()",
     "ex4_answer": "extractor = model[:-3]", "ex5_answer": "units = (1, 2, 4, 14, 23, 29, 127)",
     **NEWER},
]
WRONG = {"ex1_answer": "n_filters = 3", "ex2_answer": "conv2_weights = model[0].weight",
         "ex4_answer": "extractor = model[:13]", "ex5_answer": "units = [1, 2, 4, 14, 23, 29, 128]"}
BROKEN = [{"ex2_answer": "raise ValueError('oops')"},
          {"ex1_answer": "import not_a_module_of_mine"},
          {"ex4_answer": "while True:\n    pass"},
          {"ex2_answer": "import os\nos._exit(3)"}]


def make_submissions(release, n: int, folder: Path) -> dict[str, str]:
    """``n`` submissions, interleaved: 40 % correct, 25 % wrong, 20 % blank, 15 % broken."""
    import nbformat

    cycle = ("correct wrong correct blank broken correct wrong correct blank correct "
             "wrong broken correct blank wrong correct broken blank correct wrong").split()
    kinds = {}
    for k in range(n):
        kind = cycle[k % len(cycle)]
        answers = {"correct": CORRECT[k % 2], "wrong": WRONG, "blank": {},
                   "broken": {**CORRECT[0], **BROKEN[k % 4]}}[kind]
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        for c in nb.cells:
            if c.get("id") in answers:
                c.source = c.source.replace(STUB, answers[c.id])
        sid = f"s{k:03d}-{kind}"
        (folder / sid).mkdir(parents=True)
        nbformat.write(nb, folder / sid / "cnn_interpretability.ipynb")
        kinds[sid] = kind
    return kinds


def _peaks(outcomes: dict) -> list[float]:
    return [o["kernel_peak_mb"] for o in outcomes.values() if o.get("kernel_peak_mb")]


@contextlib.contextmanager
def dask_cluster(workers: int, log: Path):
    """``dask scheduler`` and ``workers`` ``dask worker`` commands, as on other machines."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dask = str(Path(sys.executable).parent / "dask")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT / "autograder"), str(ROOT), os.environ.get("PYTHONPATH")]))}
    address = f"tcp://127.0.0.1:{port}"
    with open(log, "wb") as out:
        procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], stdout=out, stderr=out, env=env)]
        time.sleep(3)
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                                   stdout=out, stderr=out, env=env) for _ in range(workers)]
        try:
            yield address
        finally:
            for proc in procs[::-1]:
                proc.terminate()
                proc.wait(timeout=60)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("CNNLAB_DATA"))
    p.add_argument("--checkpoint", help="a quick-profile model file to reuse (else trained)")
    p.add_argument("--n", type=int, default=40, help="submissions (40)")
    p.add_argument("--subset", type=int, default=8, help="submissions for --no-sandbox (8)")
    p.add_argument("--no-memo-subset", type=int, default=6,
                   help="submissions graded again on a course set up with --no-memo (6)")
    p.add_argument("--keep", action="store_true", help="keep the temporary course")
    args = p.parse_args(argv)

    import cnnlab_grade as g
    import nbformat

    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    base = Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    course = base / "course"
    setup = ["setup", str(course), "--no-self-check", "--student-cell-timeout", "10",
             *(["--data", args.data] if args.data else ["--synthetic"]),
             *(["--checkpoint", args.checkpoint] if args.checkpoint else [])]
    print("data:", args.data or "made-up images (--synthetic)", "| load average:",
          os.getloadavg(), flush=True)
    try:
        if g.main(setup) != 0:
            return 1
        settings = g._settings(course)
        release = nbformat.read(course / "release" / g.A / f"{g.A}.ipynb", as_version=4)
        kinds = make_submissions(release, args.n, base / "subs")
        students = g.collect(course, base / "subs")
        runs = {}
        for name, jobs, chosen, no_sandbox in (
                ("jobs 1", 1, students, False), ("jobs 2", 2, students, False),
                ("scheduler, 2 workers", 2, students, False),
                ("no-sandbox, jobs 1", 1, students[:args.subset], True)):
            with (dask_cluster(2, base / "dask.log") if name.startswith("scheduler")
                  else contextlib.nullcontext()) as address:
                start = time.perf_counter()
                out = g.grade_students(course, settings, chosen, jobs=jobs, quiet=True,
                                       no_sandbox=no_sandbox, scheduler=address)
                wall = time.perf_counter() - start
            runs[name] = {"wall_s": round(wall, 1), "per_submission_s": round(wall / len(chosen), 2),
                          "outcomes": {s: out[s]["outcome"] for s in chosen},
                          "nbgrader_s": {s: out[s].get("seconds") for s in chosen},
                          "peak_rss_mb": _peaks(out)}
            print(f"{name:20s} {len(chosen):3d} submissions in {wall:7.1f} s "
                  f"({wall / len(chosen):.2f} s each), load {os.getloadavg()[0]:.2f}", flush=True)
        # the same first submissions on a course set up without the solution's saved
        # results (setup --no-memo), one at a time: what setup's step 4 saves per submission
        bare_course = base / "course-no-memo"
        if g.main([*setup[:1], str(bare_course), *setup[2:], "--no-memo"]) != 0:
            return 1
        bare_settings = g._settings(bare_course)
        chosen = g.collect(bare_course, base / "subs")[:args.no_memo_subset]
        start = time.perf_counter()
        out = g.grade_students(bare_course, bare_settings, chosen, jobs=1, quiet=True)
        wall = time.perf_counter() - start
        runs["no memo, jobs 1"] = {"wall_s": round(wall, 1), "per_submission_s": round(wall / len(chosen), 2),
                                   "outcomes": {s: out[s]["outcome"] for s in chosen},
                                   "nbgrader_s": {s: out[s].get("seconds") for s in chosen},
                                   "peak_rss_mb": _peaks(out)}
        print(f"{'no memo, jobs 1':20s} {len(chosen):3d} submissions in {wall:7.1f} s "
              f"({wall / len(chosen):.2f} s each), load {os.getloadavg()[0]:.2f}", flush=True)
        both = [s for s in chosen if runs["jobs 1"]["nbgrader_s"][s] and out[s].get("seconds")]
        memo_gain = (sum(out[s]["seconds"] for s in both)
                     / sum(runs["jobs 1"]["nbgrader_s"][s] for s in both)) if both else None
        sub = [s for s in students[:args.subset]
               if runs["jobs 1"]["nbgrader_s"][s] and runs["no-sandbox, jobs 1"]["nbgrader_s"][s]]
        boxed = sum(runs["jobs 1"]["nbgrader_s"][s] for s in sub)
        bare = sum(runs["no-sandbox, jobs 1"]["nbgrader_s"][s] for s in sub)
        speedup = runs["jobs 1"]["wall_s"] / runs["jobs 2"]["wall_s"]
        external = runs["jobs 1"]["wall_s"] / runs["scheduler, 2 workers"]["wall_s"]
        peaks = runs["jobs 1"]["peak_rss_mb"] + runs["jobs 2"]["peak_rss_mb"]
        t1 = runs["jobs 1"]["per_submission_s"]
        est = 300 * t1 / (16 * speedup / 2)
        est_3000 = 3000 * t1 / (64 * speedup / 2)
        summary = {
            "submissions": args.n, "kinds": {k: list(kinds.values()).count(k) for k in set(kinds.values())},
            "speedup_jobs2": round(speedup, 2), "speedup_scheduler_2_workers": round(external, 2),
            "sandbox_overhead": round(boxed / bare - 1, 3) if bare else None,
            "overhead_on": len(sub),
            "no_memo_over_memo_nbgrader_s": round(memo_gain, 2) if memo_gain else None,
            "memo_compared_on": len(both),
            "peak_rss_mb_per_kernel": {"median": statistics.median(peaks) if peaks else None,
                                       "max": max(peaks) if peaks else None},
            "estimate_300_students_16_cores_min": round(est / 60, 1),
            "estimate_memory_16_kernels_gb": round(16 * max(peaks) / 1024, 1) if peaks else None,
            "estimate_3000_students_64_cores_min": round(est_3000 / 60, 1),
            "limits": g.sandbox.describe_limits(settings),
        }
        print(json.dumps(summary, indent=1))
        print(f"speed-up of 2 jobs: {speedup:.2f}x (goal >= 1.7x); sandbox overhead on "
              f"{len(sub)} submissions: {summary['sandbox_overhead']:+.1%} (goal < 10 %)"
              if bare else "no overhead measured")
        if memo_gain:
            print(f"without the solution's saved results (setup --no-memo) nbgrader takes "
                  f"{memo_gain:.2f}x as long on the same {len(both)} submissions")
        print(f"ESTIMATE (not measured): 300 students on 16 cores ~ {est / 60:.0f} min, "
              f"assuming the 2-job efficiency holds at 16 jobs; memory ~ "
              f"{summary['estimate_memory_16_kernels_gb']} GB for 16 kernels")
        print(f"scheduler + 2 workers (dask commands): {external:.2f}x serial; ESTIMATE (not "
              f"measured): 3,000 students on 64 cores ~ {est_3000 / 60:.0f} min at the same "
              "efficiency")
        (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
        (ROOT / "benchmarks" / "results" / "bench_autograde.json").write_text(
            json.dumps({"summary": summary, "runs": runs}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("kept", base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
