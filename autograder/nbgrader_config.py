"""nbgrader configuration of the cnnlab course (nbgrader 0.9.6).

``python autograder/cnnlab_grade.py setup COURSE`` copies this file, ``cnnlab_nbgrader.py``
and ``recheck.py`` into the course folder, beside the ``cnnlab_course.json`` it writes
(profile, checkpoint folder, data, time limits). Every ``nbgrader`` command run in the
course folder (generate_assignment, autograde, formgrader, export, generate_feedback)
then reads it. Values:

- course ``cnnlab``, one assignment ``cnn_interpretability`` built from
  ``solutions/cnn_interpretability.ipynb`` (copied to ``source/``);
- the grading kernel inherits ``CNNLAB_PROFILE`` (quick by default), ``CNNLAB_CHECKPOINTS``
  (the course's ``checkpoints/`` with the model trained once at setup, so no student's
  notebook retrains it) and the data location;
- per-cell time limits: 300 s for the instructor's locked cells, 60 s for student
  cells (the quick profile's slowest cell takes seconds); a cell over its limit is
  interrupted and the rest of the notebook still runs;
- deleted test cells are re-inserted (``OverwriteCells.add_missing_cells``), never left
  "needs manual grade";
- the instructor's cells after the last test cell (occlusion, t-SNE, explorers) are not
  run while grading: no score depends on them, and they are the slowest
  (``run_after_last_test`` in cnnlab_course.json turns them back on);
- an answer-export cell runs after the notebook for the independent re-check, and is
  removed before the autograded notebook is saved;
- feedback never shows hidden tests.
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
if here not in sys.path:
    sys.path.insert(0, here)

import cnnlab_nbgrader as course  # noqa: E402
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, Execute,  # noqa: E402
                                    GetGrades, IgnorePattern, LimitOutput, SaveAutoGrades)

settings = course.load_settings(here)
c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)

c.CourseDirectory.course_id = settings["course_id"]
c.CourseDirectory.root = here

# --- execution ------------------------------------------------------------------
c.Execute.timeout = int(settings["student_cell_timeout"])  # used if timeout_func is unset
c.Execute.timeout_func = course.cell_timeout(settings)
c.Execute.interrupt_on_timeout = True  # an ordinary endless loop: interrupt, grade the rest
c.Execute.startup_timeout = 120
c.Execute.on_cell_execute = course.note_cell  # names the cell that hangs or kills the kernel
os.environ.update(course.kernel_environment(settings))  # the kernel inherits these

# --- sanitizing and grading -------------------------------------------------------
# Deleted grade cells go back in rather than staying "needs manual grade" for ever.
# cnnlab_grade.py re-inserts them itself before nbgrader runs: nbgrader 0.9.6's own
# re-insertion raises KeyError when the cell before the deleted one in the source is a
# locked cell that is not graded (ex4_test follows features_shape), failing the submission.
c.OverwriteCells.add_missing_cells = True
c.ExportAnswers.course_root = here
c.ExportAnswers.run_after_last_test = bool(settings["run_after_last_test"])
c.Execute.skip_cells_with_tag = course.SKIP_TAG  # nbclient's default, stated
c.Autograde.autograde_preprocessors = [
    course.ExportAnswers,
    Execute,
    course.DropExport,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# --- feedback -------------------------------------------------------------------
c.GenerateFeedback.preprocessors = [GetGrades, course.HideHiddenTests, CSSHTMLHeaderPreprocessor]
