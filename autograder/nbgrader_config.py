"""nbgrader configuration of the cnnlab course (nbgrader 0.9.6).

``cnnlab_grade.py setup COURSE`` copies this file, ``cnnlab_nbgrader.py``, ``repair.py``,
``recheck.py``, ``sandbox.py``, ``bounds.py`` and ``inert.py`` into the course folder, beside
the ``cnnlab_course.json`` it writes. Every ``nbgrader`` command run there (autograde,
formgrader, export, generate_feedback) then grades the way ``cnnlab_grade.py grade`` does:

- every student kernel runs in the bubblewrap sandbox (kernelspec ``cnnlab-sandbox`` in
  ``COURSE/kernels/``, Unix-socket transport, a fresh runtime folder per kernel);
- the submission is repaired against the release before nbgrader's own sanitizing;
- per-cell time limits: the instructor's locked cells get ``instructor_cell_timeout``
  (300 s), student cells ``student_cell_timeout`` (60 s), then are interrupted;
- the answers are exported from the kernel and re-checked outside it, in the gradebook;
- feedback never shows hidden tests, and every figure in it has alternative text;
  ``nbgrader export`` writes the course's CSV;
- what a student wrote is inert wherever the instructor looks at it (``inert.py``): the
  autograded notebook is stored that way, and every HTML export (formgrader's
  manual-grading page, the feedback) makes it so again before rendering.
"""

import os
import sys
from pathlib import Path

here = os.path.dirname(os.path.abspath(__file__))
if here not in sys.path:
    sys.path.insert(0, here)

import cnnlab_nbgrader as course  # noqa: E402
import inert  # noqa: E402
import sandbox  # noqa: E402
from nbconvert import preprocessors as nbconvert_pre  # noqa: E402
from nbgrader import preprocessors as pre  # noqa: E402

course.COURSE = Path(here)  # whichever copy of cnnlab_nbgrader was imported
course.exit_with_grader()  # a run started by a grading worker ends with it
settings = sandbox.load_settings(here)
c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)

c.CourseDirectory.course_id = settings["course_id"]
c.CourseDirectory.root = here
if settings.get("db_url"):  # setup --db-url: one gradebook (PostgreSQL...) for every grader
    c.CourseDirectory.db_url = settings["db_url"]

# --- the sandboxed kernel -------------------------------------------------------
os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [here, os.environ.get("JUPYTER_PATH")]))
c.Execute.kernel_name = sandbox.KERNEL_NAME
c.KernelManager.transport = "ipc"
c.Execute.timeout = int(settings["student_cell_timeout"])
c.Execute.timeout_func = course.cell_timeout(settings)
c.Execute.interrupt_on_timeout = True  # an endless loop is interrupted, the rest graded
c.Execute.startup_timeout = 120
# After an interrupt, a kernel inside a long torch call answers only when the call
# returns: wait for its last output (nbclient's 4 s would call an honest, merely slow
# cell "did not stop when interrupted" and leave the whole submission ungradable).
c.Execute.iopub_timeout = 20
c.Execute.on_cell_execute = course.note_cell

# --- sanitizing, grading, re-checking ---------------------------------------------
c.Autograde.sanitize_preprocessors = [course.Repair, pre.ClearOutput, pre.DeduplicateIds,
                                      pre.OverwriteKernelspec, pre.OverwriteCells,
                                      pre.CheckCellMetadata]
c.Autograde.autograde_preprocessors = [course.AddGradingCells, course.SandboxedExecute,
                                       course.DropGradingCells, pre.IgnorePattern,
                                       nbconvert_pre.ClearMetadataPreprocessor, pre.LimitOutput,
                                       pre.SaveAutoGrades, course.Recheck,
                                       pre.AssignLatePenalties, pre.CheckCellMetadata,
                                       course.RecordInert]  # student work inert (inert.py)
c.Autograde.post_convert_hook = course.finish

# --- feedback and export ----------------------------------------------------------
c.GenerateFeedback.preprocessors = [pre.GetGrades, course.HideHiddenTests, course.AltText,
                                    nbconvert_pre.CSSHTMLHeaderPreprocessor]
c.ExportApp.plugin_class = course.CnnlabExport
# formgrader's manual-grading pages and the feedback HTML: student work made inert again,
# also in notebooks autograded before inert.py existed
c.HTMLExporter.preprocessors = [inert.MakeInert]
