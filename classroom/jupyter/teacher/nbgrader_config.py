# nbgrader settings of the teacher (formgrader and the nbgrader command line).
# jupyterhub_config.py puts this folder first on the teacher's JUPYTER_CONFIG_PATH.
import os

c = get_config()  # noqa: F821

# The course directory `make assignments` builds (tools/assignments.py --course DIR build),
# inside the teacher's home: the formgrader needs it under the Jupyter server's root, and
# the home's mode 0700 keeps source/, gradebook.db and the hidden tests from students.
COURSE = os.path.expanduser(os.environ.get("CLASSROOM_COURSE", "~/course"))
c.CourseDirectory.root = COURSE

# The course's own settings (course id, the 300 s cell timeout of autograde, and the
# never-overwritten nbgrader_config_local.py): the formgrader reads only the Jupyter
# config path and its working directory, not the course directory, so load them here.
load_subconfig("nbgrader_config.py", path=COURSE)  # noqa: F821

# Feedback without the hidden tests and the mark schemes: nbgrader 0.9's generate_feedback
# renders the autograded notebook, in which autograde restored both. ClearHiddenTests and
# ClearMarkScheme drop the lines between their BEGIN/END markers (the course config sets
# ClearMarkScheme.enforce_metadata = False); a failed hidden test still shows its error.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbgrader.preprocessors.ClearMarkScheme",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
