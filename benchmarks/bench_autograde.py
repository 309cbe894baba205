"""Benchmark: seconds to autograde one submission of the lab, as the instructor's command does.

What it measures: a temporary nbgrader course made by ``autograder/cnnlab_grade.py
setup`` (``quick`` profile, the course model saved once and reused by every
submission), then ``--repeat`` gradings of the solution notebook, each as its own
student, through ``cnnlab_grade.grade_students``: repair and checks against the
release, ``nbgrader autograde`` in a worker process (kernel start, the notebook up to the
last test cell, the answer export), and the re-check. Reported per run:

- ``nbgrader``: the worker's time for ``autograde`` of that student (what the issue's
  30 s target is about);
- ``end to end``: the same plus the repair, the re-check and the gradebook reads;
- once more with ``run_after_last_test`` on, i.e. every cell of the notebook
  (occlusion, t-SNE, explorers), for comparison.

On what: the data of ``--data`` (CIFAR-10 folder or ImageFolder archive; default
``$CNNLAB_DATA``, else made-up images, said so), the model of ``--checkpoint`` when
given (timings do not depend on the weights), else the quick profile trained once by
``setup`` (a few minutes, not timed). The CPU's load average is printed with the
times: on a shared machine they grow with it.

Reproduce (from the repository root, nbgrader's environment active):

    python benchmarks/bench_autograde.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autograder"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("CNNLAB_DATA"))
    p.add_argument("--checkpoint", help="a model file to reuse instead of training")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the temporary course")
    args = p.parse_args(argv)

    import nbformat

    import cnnlab_grade as g

    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                          os.environ.get("PATH", "")])
    base = Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    course = base / "course"
    setup = ["setup", str(course), "--no-self-check",
             *(["--data", args.data] if args.data else ["--synthetic"]),
             *(["--checkpoint", args.checkpoint] if args.checkpoint else [])]
    print(f"$ cnnlab_grade.py {' '.join(setup)}")
    if g.main(setup) != 0:
        return 1
    settings = g.load_settings(course)
    a = settings["assignment"]
    release = nbformat.read(course / "release" / a / f"{a}.ipynb", as_version=4)
    source = nbformat.read(course / "source" / a / f"{a}.ipynb", as_version=4)
    solution = g.solution_submission(release, source)

    def grade_once(sid: str) -> tuple[float, float, float]:
        dest = course / "submitted" / sid / a / f"{a}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(solution, dest)
        start = time.perf_counter()
        status = g.grade_students(course, settings, [sid], quiet=True)[sid]
        wall = time.perf_counter() - start
        rows = g.build_rows(course, settings, [sid])
        assert rows[0]["auto"] == rows[0]["auto_max"], rows[0]
        return status["grading"]["seconds"], wall, os.getloadavg()[0]

    print(f"\ndata: {settings['data'] or 'made-up images (--synthetic)'}; profile "
          f"{settings['profile']}; {os.cpu_count()} CPUs")
    print(f"{'run':>18s} {'nbgrader s':>11s} {'end to end s':>13s} {'load avg':>9s}")
    for i in range(args.repeat):
        t, wall, load = grade_once(f"bench{i}")
        print(f"{'up to last test ' + str(i + 1):>18s} {t:11.1f} {wall:13.1f} {load:9.2f}")
    settings_file = course / "cnnlab_course.json"
    data = json.loads(settings_file.read_text())
    data["run_after_last_test"] = True
    settings_file.write_text(json.dumps(data, indent=2))
    settings = g.load_settings(course)
    t, wall, load = grade_once("bench-all")
    print(f"{'every cell':>18s} {t:11.1f} {wall:13.1f} {load:9.2f}")
    if args.keep:
        print(f"course kept in {course}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
