"""A whole class on this machine: JupyterHub, nbgrader's exchange, a teacher, two students.

``make classroom`` runs this script as root (it creates Unix accounts). On the loopback
only, it

1. creates three throwaway Unix accounts (a teacher and two students, homes 0700), builds
   the teacher's course directory with tools/assignments.py (what ``make assignments``
   runs) and creates nbgrader's exchange (0777, as nbgrader documents);
2. starts JupyterHub with classroom/jupyterhub_config.py on 127.0.0.1 and, through the
   Hub's REST API with a service token, creates the users, issues each a token and starts
   each user's server (a process running as that user);
3. drives the class through those servers, as the browser would: the teacher releases the
   assignment (formgrader API); each student lists and fetches it (Assignments tab API),
   saves an answer (contents API) and submits; the deadline passes between the two
   submissions; the teacher collects, autogrades, enters the grade of the written answer,
   generates and releases feedback; each student fetches their feedback;
4. checks, failing the run if one does not hold: the scores are the ones the notebook's
   points imply; the teacher's gradebook holds both submissions, the second marked late;
   the formgrader exists for the teacher and not for the students; each student, trying as
   that Unix user, is refused the other student's submission and feedback (exchange
   inbound/ and feedback/, the other's home), the course's source/, gradebook.db and
   autograded/, and no file a student can read holds a hidden test or another student's
   answer;
5. stops everything it started (also on failure or on a signal: the Hub, its proxy, the
   users' servers and kernels), removes the accounts and checks that no process of the run
   is left and no port of the run is listening.

``--break world-readable`` makes the exchange world-readable (chmod -R a+rX) once the
students have submitted: the permission checks must then fail the run.

Usage (root): python classroom/run_class.py [--assignment NAME] [--break world-readable]
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tools import assignments as A  # noqa: E402

COURSE_ID = A.COURSE_ID
PREFIX = "wnc"  # account names: wnc-teacher, wnc-student1, wnc-student2
MARK = "wide-networks classroom run (make classroom)"  # GECOS of the throwaway accounts
TEACHER = f"{PREFIX}-teacher"
STUDENTS = (f"{PREFIX}-student1", f"{PREFIX}-student2")
BIN = Path(sys.executable).parent  # the venv's bin/ (not resolved: keep the venv)
USER_BIN = BIN  # the bin/ the throwaway users run (see users_environment)
SIGNED = "(answer of {student})"  # in each answer cell: whose answer a file shows
WRITTEN = "My written answer " + SIGNED + ": the kernel stays close to its initial value."


class ClassroomError(RuntimeError):
    """A step of the class failed or a check did not hold."""


def log(msg: str) -> None:
    print(f"[classroom {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Processes, accounts, ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_env(name: str, extra: dict | None = None) -> dict[str, str]:
    """A clean environment for a command run as ``name`` (runuser keeps root's otherwise)."""
    home = pwd.getpwnam(name).pw_dir
    role = "teacher" if name == TEACHER else "student"
    env = {
        "HOME": home, "USER": name, "LOGNAME": name, "SHELL": "/bin/bash",
        "PATH": f"{USER_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "JUPYTER_CONFIG_PATH": os.pathsep.join(
            [str(HERE / "jupyter" / role), str(HERE / "jupyter" / "common")]),
    }
    for key in ("CLASSROOM_EXCHANGE", "CLASSROOM_PYTHONPATH"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    if os.environ.get("CLASSROOM_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["CLASSROOM_LD_LIBRARY_PATH"]
    if os.environ.get("CLASSROOM_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["CLASSROOM_PYTHONPATH"]
    env.update(extra or {})
    return env


def as_user(name: str, args: list[str], *, input: str | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``args`` as the Unix user ``name`` (runuser), in their home, clean environment."""
    env = user_env(name)
    cmd = ["runuser", "-u", name, "--", "env", "-i",
           *[f"{k}={v}" for k, v in env.items()], *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          cwd=env["HOME"])
    if check and proc.returncode != 0:
        raise ClassroomError(f"as {name}: {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def pids_of(uid: int) -> list[int]:
    out = subprocess.run(["ps", "-U", str(uid), "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def kill_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def listening_ports() -> set[int]:
    """TCP ports something listens on (any address), from /proc/net/tcp and tcp6."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # state LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def remove_account(name: str) -> None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return
    if entry.pw_gecos != MARK:
        raise ClassroomError(f"account {name} exists and is not one of this script's: "
                             "refusing to touch it")
    uid = entry.pw_uid
    kill_pids(pids_of(uid), signal.SIGKILL)
    for _ in range(50):
        if not pids_of(uid):
            break
        time.sleep(0.1)
    subprocess.run(["userdel", "-r", name], capture_output=True, text=True)


def create_account(name: str) -> pwd.struct_passwd:
    remove_account(name)  # a stale one from a run that was killed with SIGKILL
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", MARK,
                    "--user-group", name], check=True, capture_output=True, text=True)
    entry = pwd.getpwnam(name)
    os.chmod(entry.pw_dir, 0o700)  # nobody else may read a user's files
    return entry


def runs_as(name: str, python: str, code: str = "import nbgrader") -> bool:
    proc = subprocess.run(["runuser", "-u", name, "--", python, "-c", code],
                          capture_output=True, text=True, cwd="/", timeout=300)
    return proc.returncode == 0


def reachable(path: Path) -> bool:
    """Whether another user (nobody) can read ``path``."""
    return subprocess.run(["runuser", "-u", "nobody", "--", "test", "-r", str(path)],
                          capture_output=True, cwd="/").returncode == 0


def link_tree(src: Path, dst: Path, skip: set[str] = frozenset()) -> None:
    """Hard-link a folder's files into ``dst`` (copy them across file systems).

    New folders (modes as the originals), the same files: instant and no disk space, and
    reachable by others when only an ancestor of ``src`` (e.g. /root, 0700) was not.
    """
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, symlinks=True, copy_function=link,
                    ignore=lambda d, names: [n for n in names if os.path.join(d, n) in skip
                                             or n == "__pycache__"])


def users_environment(run_dir: Path) -> Path:
    """The bin/ of a Python environment the throwaway users can run.

    The course's virtualenv when they can run its Python. Otherwise (a checkout or a pyenv
    build under /root, mode 0700) the same environment made reachable in the run's folder:
    a virtualenv on the same Python (its installation hard-linked there when others cannot
    run it, LD_LIBRARY_PATH then finding the copy's libpython) that imports the course's
    site-packages (hard-linked there when others cannot read them) and has its share/ and
    etc/ (JupyterLab, the kernel spec, the nbgrader extensions' switches) and its console
    scripts, their first line pointing at the new Python.
    """
    if runs_as("nobody", str(BIN / "python")):
        return BIN
    import sysconfig

    base = Path(sys.base_prefix)
    version = "python{}.{}".format(*sys.version_info[:2])
    interpreter = base / "bin" / version
    env = dict(os.environ)
    if not runs_as("nobody", str(interpreter), "pass"):
        python = run_dir / "python"
        link_tree(base, python, {str(base / "lib" / version / "site-packages")})
        (python / "lib" / version / "site-packages").mkdir(exist_ok=True)
        interpreter = python / "bin" / version
        os.environ["CLASSROOM_LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"] = str(python / "lib")
    site = Path(sysconfig.get_paths()["purelib"])
    if not reachable(site / "nbgrader" / "__init__.py"):
        link_tree(site, run_dir / "site-packages")
        site = run_dir / "site-packages"
    venv = run_dir / "venv"
    subprocess.run([str(interpreter), "-m", "venv", "--without-pip", str(venv)], check=True,
                   env=env)
    target = venv / "lib" / version / "site-packages" / "wide_networks_course.pth"
    target.write_text(f"import site; site.addsitedir({str(site)!r})\n")
    for folder in ("share", "etc"):
        if (BIN.parent / folder).exists():
            if reachable(BIN.parent / folder):
                (venv / folder).symlink_to(BIN.parent / folder)
            else:
                link_tree(BIN.parent / folder, venv / folder)
    for script in BIN.iterdir():
        dest = venv / "bin" / script.name
        if dest.exists() or not script.is_file():
            continue
        try:
            head, rest = script.read_bytes().split(b"\n", 1)
        except (ValueError, OSError):
            continue
        if head.startswith(b"#!") and b"python" in head:
            dest.write_bytes(f"#!{venv / 'bin' / 'python'}\n".encode() + rest)
            dest.chmod(0o755)
    # Only what is new: hard-linked files (share/, etc/) share modes with the originals.
    subprocess.run(["chmod", "-R", "a+rX", str(venv / "bin"), str(venv / "lib"),
                    str(venv / "pyvenv.cfg")], check=True)
    venv.chmod(0o755)
    probe = subprocess.run(["runuser", "-u", "nobody", "--", "env",
                            f"LD_LIBRARY_PATH={env.get('LD_LIBRARY_PATH', '')}",
                            str(venv / "bin" / "python"), "-c", "import nbgrader, torch"],
                           capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        raise ClassroomError(f"the users' environment {venv} does not work:\n"
                             + probe.stderr[-2000:])
    log(f"other users cannot run {BIN / 'python'}: they run {venv}, the same Python "
        f"({interpreter}) and site-packages ({site})")
    return venv / "bin"


# --------------------------------------------------------------------------------------
# HTTP (the Hub's REST API, and the users' servers through the Hub's proxy)


class Http:
    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, token: str, body=None, form: dict | None = None,
             timeout: float = 120, ok=(200, 201, 202, 204)) -> tuple[int, object]:
        url = self.base + path
        headers = {"Authorization": f"token {token}"}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        if ok and status not in ok:
            raise ClassroomError(f"{method} {path}: HTTP {status}: {str(payload)[:2000]}")
        return status, payload


# --------------------------------------------------------------------------------------
# The assignment: which one, the submissions, the expected scores


def written_cells(nb: dict) -> list[dict]:
    """Manually graded answer cells (nbgrader: solution and grade, not a test)."""
    return [c for c in nb["cells"]
            if A.nbgrader_meta(c).get("solution") and A.nbgrader_meta(c).get("grade")]


def choose_assignment(requested: str | None) -> str:
    lessons = A.lesson_notebooks()
    if requested:
        if requested not in lessons:
            raise ClassroomError(f"--assignment {requested!r}: not one of {sorted(lessons)}")
        return requested
    with_written = [n for n, p in lessons.items() if written_cells(A.read_notebook(p))]
    if with_written:
        return with_written[0]
    log("warning: no assignment has a written (manually graded) answer; "
        "the manual-grading step is skipped")
    return sorted(lessons)[0]


def strip_markers(text: str) -> str:
    markers = (A.BEGIN_SOLUTION, A.END_SOLUTION)
    return "\n".join(ln for ln in text.splitlines() if not any(m in ln for m in markers))


def wrong_code(text: str) -> str:
    """The solution, then every function and name it defines rebound to a wrong answer."""
    code = strip_markers(text)
    tree = ast.parse(code)
    lines = ["", "# (changed my mind)"]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.append(f"def {node.name}(*args, **kwargs):\n    return 0.0")
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    lines.append(f"{target.id} = 0.0")
    if len(lines) == 2:
        raise ClassroomError("the solution cell chosen to be answered wrongly defines nothing")
    return code + "\n".join(lines)


def plan(source: dict) -> dict:
    """What each student submits and the score each must get, from the source notebook.

    Student 1: every solution as in the source (the reference), written answer included;
    its grade is entered at full points. Student 2: the same but the last code solution
    cell answers wrongly (so every autograded test after it fails) and the written answer
    is other text, graded at half its points.
    """
    cells = source["cells"]
    meta = [A.nbgrader_meta(c) for c in cells]
    code_solutions = [i for i, m in enumerate(meta) if m.get("solution") and not m.get("grade")
                      and cells[i]["cell_type"] == "code"]
    tests = [i for i, m in enumerate(meta) if m.get("grade") and not m.get("solution")]
    broken = max(i for i in code_solutions if any(t > i for t in tests))
    written = [i for i, m in enumerate(meta) if m.get("solution") and m.get("grade")]
    auto_total = sum(float(meta[t].get("points", 0)) for t in tests)
    lost = sum(float(meta[t].get("points", 0)) for t in tests if t > broken)
    written_total = sum(float(meta[i].get("points", 0)) for i in written)
    written_half = sum(float(meta[i].get("points", 0)) / 2 for i in written)
    return {
        "broken": meta[broken]["grade_id"],
        "lost_tests": [meta[t]["grade_id"] for t in tests if t > broken],
        "written": {meta[i]["grade_id"]: float(meta[i].get("points", 0)) for i in written},
        "max": auto_total + written_total,
        "expected": {STUDENTS[0]: auto_total + written_total,
                     STUDENTS[1]: auto_total - lost + written_half},
        "manual": {STUDENTS[0]: {meta[i]["grade_id"]: float(meta[i].get("points", 0))
                                 for i in written},
                   STUDENTS[1]: {meta[i]["grade_id"]: float(meta[i].get("points", 0)) / 2
                                 for i in written}},
    }


def fill(release: dict, source: dict, student: str, wrong: str | None) -> dict:
    """The student's notebook: the released one with its answer cells filled in."""
    by_id = {A.nbgrader_meta(c).get("grade_id"): c for c in source["cells"]}
    nb = copy.deepcopy(release)
    for cell in nb["cells"]:
        meta = A.nbgrader_meta(cell)
        if not meta.get("solution"):
            continue
        reference = A.cell_source(by_id[meta["grade_id"]])
        if cell["cell_type"] == "markdown":
            text = WRITTEN.format(student=student)
            cell["source"] = strip_markers(reference) if wrong is None else text
            if wrong is None:
                cell["source"] += "\n\n" + text
        elif meta["grade_id"] == wrong:
            cell["source"] = f"# {SIGNED.format(student=student)}\n" + wrong_code(reference)
        else:
            cell["source"] = (f"# {SIGNED.format(student=student)}\n"
                              + strip_markers(reference))
    return nb


def secret_lines(source: dict, release: dict) -> list[str]:
    """Lines of the hidden tests and mark schemes worth searching for: not short, not code
    comments, and not also in the student version (a hidden check may repeat a visible
    line, or part of one)."""
    visible = "\n".join(A.cell_source(c) for c in release["cells"])
    mark_scheme = (getattr(A, "BEGIN_MARK_SCHEME", "BEGIN MARK SCHEME"),
                   getattr(A, "END_MARK_SCHEME", "END MARK SCHEME"))
    found = []
    for cell in source["cells"]:
        for begin, end in ((A.BEGIN_HIDDEN, A.END_HIDDEN), mark_scheme):
            inside, _ = A.regions(A.cell_source(cell), begin, end)
            found += [ln.strip() for ln in inside if len(ln.strip()) >= 12
                      and not ln.strip().startswith("#") and ln.strip() not in visible]
    return found


# --------------------------------------------------------------------------------------
# The run


PROBE = r'''
import html, json, os, re, sys
req = json.load(sys.stdin)

def texts(path, raw):
    """The file as text, and as a reader sees it: HTML without tags and entities
    (highlighted code is split by <span>s), a notebook's cell sources and outputs."""
    out = [raw]
    if path.endswith((".html", ".htm")):
        out.append(html.unescape(re.sub(r"<[^>]*>", "", raw)))
    if path.endswith(".ipynb"):
        try:
            nb = json.loads(raw)
            for cell in nb.get("cells", []):
                src = cell.get("source", "")
                out.append("".join(src) if isinstance(src, list) else src)
                for o in cell.get("outputs", []):
                    out.append(json.dumps(o, ensure_ascii=False))
        except ValueError:
            pass
    return out

out = {"denied": {}, "found": []}
for path in req["must_fail"]:
    try:
        if os.path.isdir(path):
            names = os.listdir(path)
            for n in names:  # a listable folder: read what is in it too
                p = os.path.join(path, n)
                if os.path.isfile(p):
                    open(p, "rb").read(1)
            out["denied"][path] = "listed: " + ", ".join(sorted(names)[:5])
        else:
            open(path, "rb").read(1)
            out["denied"][path] = "read"
    except PermissionError as err:
        out["denied"][path] = None
    except OSError as err:
        out["denied"][path] = "error: %s" % err
for top in req["scan"]:
    for dirpath, dirnames, filenames in os.walk(top):
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                variants = texts(p, open(p, "rb").read().decode("utf-8", "replace"))
            except OSError:
                continue
            for needle in req["needles"]:
                if any(needle in text for text in variants):
                    out["found"].append([p, needle])
json.dump(out, sys.stdout)
'''

GRADEBOOK = r'''
import json, sys
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from traitlets.config.loader import PyFileConfigLoader
course, assignment = sys.argv[1], sys.argv[2]
cfg = PyFileConfigLoader("nbgrader_config.py", path=course).load_config()
cfg.CourseDirectory.root = course
cd = CourseDirectory(config=cfg)
out = {}
with Gradebook(cd.db_url, course_id=cd.course_id) as gb:
    for sub in gb.assignment_submissions(assignment):
        out[sub.student.id] = {"score": sub.score, "max_score": sub.max_score,
                               "seconds_late": sub.total_seconds_late,
                               "needs_manual_grade": sub.needs_manual_grade,
                               "duedate": str(sub.duedate), "timestamp": str(sub.timestamp)}
json.dump(out, sys.stdout)
'''


class Classroom:
    def __init__(self, assignment: str, breakage: str | None):
        self.assignment = assignment
        self.notebook = A.notebook_name(assignment)
        self.breakage = breakage
        self.hub: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self.ports: list[int] = []
        self.uids: list[int] = []
        self.tokens: dict[str, str] = {}
        self.api_token = secrets.token_hex(32)
        self.proxy_pid: int | None = None

    # --- setup --------------------------------------------------------------------------
    def setup(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="wide-networks-classroom-"))
        os.chmod(self.run_dir, 0o711)  # users may pass through to the exchange, not list
        self.state = self.run_dir / "hub"
        self.state.mkdir(mode=0o700)
        self.exchange = self.run_dir / "exchange"
        self.exchange.mkdir()
        os.chmod(self.exchange, 0o777)  # as nbgrader documents
        os.environ["CLASSROOM_EXCHANGE"] = str(self.exchange)
        # What the users need from this checkout, where they can read it: ntk_lib, the
        # exercises notebooks and tools/assignments.py (the checkout may be unreadable).
        self.src = self.run_dir / "src"
        shutil.copytree(ROOT / "ntk_lib", self.src / "ntk_lib",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (self.src / "tools").mkdir()
        shutil.copy(ROOT / "tools" / "assignments.py", self.src / "tools")
        (self.src / "lessons").mkdir()
        for notebook in A.lesson_notebooks().values():
            shutil.copy(notebook, self.src / "lessons")
        subprocess.run(["chmod", "-R", "a+rX", str(self.src)], check=True)
        os.environ["CLASSROOM_PYTHONPATH"] = str(self.src)
        global USER_BIN
        USER_BIN = users_environment(self.run_dir)
        for name in (TEACHER, *STUDENTS):
            self.uids.append(create_account(name).pw_uid)
            log(f"created Unix account {name} (uid {self.uids[-1]}, home 0700)")
        self.home = {n: Path(pwd.getpwnam(n).pw_dir) for n in (TEACHER, *STUDENTS)}
        self.course = self.home[TEACHER] / "course"
        # The teacher's environment must reach Python, nbgrader and ntk_lib.
        probe = as_user(TEACHER, ["python", "-c", "import nbgrader, ntk_lib, torch"],
                        check=False, timeout=300)
        if probe.returncode != 0:
            raise ClassroomError(
                "the throwaway users cannot import nbgrader/ntk_lib/torch from "
                f"{USER_BIN}: the course's environment must be readable by other users "
                f"(e.g. not under /root).\n{probe.stderr[-2000:]}")
        log(f"building the teacher's course directory {self.course} (make assignments' "
            "build, without executing the notebooks)")
        as_user(TEACHER, ["python", str(self.src / "tools" / "assignments.py"), "--course",
                          str(self.course), "build", "--no-validate"], timeout=900)
        self.source = A.read_notebook(self.course / "source" / self.assignment / self.notebook)
        self.release = A.read_notebook(self.course / "release" / self.assignment / self.notebook)
        self.plan = plan(self.source)

    def start_hub(self) -> None:
        port, hub_port, api_port = free_port(), free_port(), free_port()
        self.ports = [port, hub_port, api_port]
        env = {
            "PATH": f"{USER_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "HOME": "/root", "CLASSROOM_TEACHERS": TEACHER,
            "CLASSROOM_SINGLEUSER": str(USER_BIN / "jupyterhub-singleuser"),
            "CLASSROOM_STUDENTS": " ".join(STUDENTS), "CLASSROOM_IP": "127.0.0.1",
            "CLASSROOM_PORT": str(port), "CLASSROOM_HUB_PORT": str(hub_port),
            "CLASSROOM_PROXY_API_PORT": str(api_port), "CLASSROOM_STATE": str(self.state),
            "CLASSROOM_EXCHANGE": str(self.exchange),
            "CLASSROOM_PYTHONPATH": os.environ["CLASSROOM_PYTHONPATH"],
            "CLASSROOM_LD_LIBRARY_PATH": os.environ.get("CLASSROOM_LD_LIBRARY_PATH", ""),
            "CLASSROOM_API_TOKEN": self.api_token,
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        }
        self.hub_log = self.state / "jupyterhub.log"
        log(f"starting JupyterHub on http://127.0.0.1:{port} (hub 127.0.0.1:{hub_port}, "
            f"proxy API 127.0.0.1:{api_port}); log {self.hub_log}")
        with open(self.hub_log, "w") as fh:
            self.hub = subprocess.Popen(
                [str(BIN / "jupyterhub"), "-f", str(HERE / "jupyterhub_config.py")],
                cwd=self.state, env=env, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.http = Http(f"http://127.0.0.1:{port}")
        deadline = time.time() + 240
        while True:
            if self.hub.poll() is not None:
                raise ClassroomError(f"JupyterHub exited ({self.hub.returncode}):\n"
                                     + self.hub_log.read_text()[-3000:])
            try:
                status, info = self.http.call("GET", "/hub/api/", self.api_token, ok=None,
                                              timeout=10)
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise ClassroomError("JupyterHub did not answer within 240 s:\n"
                                     + self.hub_log.read_text()[-3000:])
            time.sleep(1)
        pid_file = self.state / "jupyterhub-proxy.pid"
        if pid_file.exists():
            self.proxy_pid = int(pid_file.read_text().strip())
        log(f"JupyterHub {info['version']} is up (pid {self.hub.pid}, proxy pid "
            f"{self.proxy_pid})")

    def hub_api(self, method, path, body=None, **kw):
        return self.http.call(method, "/hub/api" + path, self.api_token, body=body, **kw)[1]

    def start_servers(self) -> None:
        names = [TEACHER, *STUDENTS]
        # The Hub adds the allowed users of its configuration at start; create any missing.
        known = {u["name"] for u in self.hub_api("GET", "/users")}
        missing = [n for n in names if n not in known]
        if missing:
            self.hub_api("POST", "/users", {"usernames": missing})
        for name in names:
            token = self.hub_api("POST", f"/users/{name}/tokens",
                                 {"note": "make classroom", "expires_in": 3600})
            self.tokens[name] = token["token"]
            self.hub_api("POST", f"/users/{name}/server")
        log(f"Hub users {', '.join(names)} (created: {missing or 'by the allowed list'}), a "
            "token each (REST API), servers starting")
        deadline = time.time() + 400
        pending = set(names)
        while pending:
            for name in sorted(pending):
                user = self.hub_api("GET", f"/users/{name}")
                server = user.get("servers", {}).get("")
                if server and server.get("ready"):
                    pending.discard(name)
                    log(f"server of {name} ready at {server['url']}")
            if pending and time.time() > deadline:
                raise ClassroomError(f"servers not ready within 400 s: {sorted(pending)}\n"
                                     + self.hub_log.read_text()[-4000:])
            if pending:
                time.sleep(2)
        for name, uid in zip(names, self.uids, strict=True):
            if not pids_of(uid):
                raise ClassroomError(f"no process runs as {name}: the server is not theirs")

    def server(self, name, method, path, body=None, form=None, as_=None, **kw):
        """Call ``name``'s server through the proxy, with ``as_``'s token (default: theirs)."""
        token = self.tokens[as_ or name]
        return self.http.call(method, f"/user/{name}{path}", token, body=body, form=form, **kw)

    def formgrader(self, method, path, body=None, timeout=120):
        status, result = self.server(TEACHER, method, f"/formgrader/api{path}", body=body,
                                     timeout=timeout)
        if isinstance(result, dict) and result.get("success") is False:
            raise ClassroomError(f"formgrader {path}: {result.get('error')}\n"
                                 f"{result.get('log', '')[-3000:]}")
        return result

    # --- the class ----------------------------------------------------------------------
    def check_extensions(self) -> None:
        status, _ = self.server(TEACHER, "GET", "/formgrader/api/status", ok=None)
        if status != 200:
            raise ClassroomError(f"the teacher's server has no formgrader (HTTP {status})")
        for s in STUDENTS:
            status, _ = self.server(s, "GET", "/formgrader/api/status", ok=None)
            if status != 404:
                raise ClassroomError(f"{s}'s server answers the formgrader (HTTP {status})")
            self.server(s, "GET", f"/assignments?course_id={COURSE_ID}")
        status, _ = self.server(STUDENTS[0], "GET", "/api/contents", as_=STUDENTS[1], ok=None)
        if status != 403:
            raise ClassroomError(f"{STUDENTS[1]}'s token opened {STUDENTS[0]}'s server "
                                 f"(HTTP {status})")
        log("formgrader on the teacher's server only; Assignments tab on the students'; "
            "a student's token is refused by another student's server (403)")

    def release_and_fetch(self) -> None:
        self.formgrader("POST", f"/assignment/{self.assignment}/release")
        log(f"teacher released {self.assignment} (formgrader)")
        for s in STUDENTS:
            listed = self.server(s, "GET", f"/assignments?course_id={COURSE_ID}")[1]
            released = [a for a in listed["value"] if a["assignment_id"] == self.assignment]
            if not released or released[0]["status"] != "released":
                raise ClassroomError(f"{s} does not see {self.assignment} as released: {listed}")
            self.server(s, "POST", "/assignments/fetch",
                        form={"course_id": COURSE_ID, "assignment_id": self.assignment})
            fetched = self.server(s, "GET", f"/api/contents/{self.assignment}/{self.notebook}")
            nb = fetched[1]["content"]
            text = json.dumps(nb)
            if A.BEGIN_SOLUTION in text or A.BEGIN_HIDDEN in text:
                raise ClassroomError(f"{s}'s fetched notebook holds solutions or hidden tests")
            log(f"{s} fetched {self.assignment} (Assignments tab), owned by "
                f"{(self.home[s] / self.assignment / self.notebook).owner()}")

    def save_and_submit(self, student: str, wrong: str | None) -> None:
        nb = fill(self.release, self.source, student, wrong)
        self.server(student, "PUT", f"/api/contents/{self.assignment}/{self.notebook}",
                    body={"type": "notebook", "format": "json", "content": nb})
        result = self.server(student, "POST", "/assignments/submit",
                             form={"course_id": COURSE_ID, "assignment_id": self.assignment},
                             timeout=300)[1]
        if isinstance(result, dict) and result.get("success") is False:
            raise ClassroomError(f"{student}'s submission failed: {result}")
        what = "the reference solution" if wrong is None else f"a wrong {wrong}"
        log(f"{student} saved {what} and submitted")

    def submit_all(self) -> None:
        self.save_and_submit(STUDENTS[0], None)
        time.sleep(1.5)
        due = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        self.formgrader("PUT", f"/assignment/{self.assignment}",
                        {"duedate_notimezone": due.strftime("%Y-%m-%dT%H:%M:%S"),
                         "duedate_timezone": "UTC"})
        log(f"teacher set the deadline to {due:%H:%M:%S} UTC (now): the next one is late")
        time.sleep(1.5)
        self.save_and_submit(STUDENTS[1], self.plan["broken"])
        if self.breakage == "world-readable":
            self.break_exchange()

    def break_exchange(self) -> None:
        subprocess.run(["chmod", "-R", "a+rX", str(self.exchange)], check=True)
        log(f"BROKEN ON PURPOSE: chmod -R a+rX {self.exchange} (the run must fail)")

    def grade(self) -> None:
        a = self.assignment
        self.formgrader("POST", f"/assignment/{a}/collect")
        log("teacher collected the submissions (formgrader)")
        for s in STUDENTS:
            t0 = time.time()
            self.formgrader("POST", f"/submission/{a}/{s}/autograde", timeout=1200)
            log(f"teacher autograded {s} ({time.time() - t0:.0f} s)")
        notebook_id = self.notebook[: -len(".ipynb")]
        subs = self.formgrader("GET", f"/submitted_notebooks/{a}/{notebook_id}")
        by_student = {sub["student"]: sub for sub in subs}
        for s in STUDENTS:
            grades = self.formgrader("GET", f"/grades?submission_id={by_student[s]['id']}")
            for grade in grades:
                if grade["name"] in self.plan["manual"][s]:
                    score = self.plan["manual"][s][grade["name"]]
                    self.formgrader("PUT", f"/grade/{grade['id']}", {"manual_score": score})
                    log(f"teacher graded {s}'s written answer {grade['name']}: "
                        f"{score:g} / {grade['max_score']:g} (formgrader)")
        self.formgrader("POST", f"/assignment/{a}/generate_feedback", timeout=600)
        self.formgrader("POST", f"/assignment/{a}/release_feedback")
        log("teacher generated and released the feedback (formgrader)")
        for s in STUDENTS:
            self.server(s, "POST", "/assignments/fetch_feedback",
                        form={"course_id": COURSE_ID, "assignment_id": a})
        log("each student fetched their feedback (Assignments tab)")

    # --- checks -------------------------------------------------------------------------
    def check_scores(self) -> dict:
        a = self.assignment
        subs = {x["student"]: x for x in self.formgrader("GET", f"/submissions/{a}")}
        missing = [s for s in STUDENTS if s not in subs]
        if missing:
            raise ClassroomError(f"the teacher's gradebook lacks the submissions of {missing}")
        book = json.loads(as_user(TEACHER, ["python", "-c", GRADEBOOK, str(self.course), a],
                                  timeout=300).stdout)
        failures = []
        for s in STUDENTS:
            got, want = book[s]["score"], self.plan["expected"][s]
            if abs(got - want) > 1e-9 or abs(book[s]["max_score"] - self.plan["max"]) > 1e-9:
                failures.append(f"{s}: {got:g} / {book[s]['max_score']:g}, expected "
                                f"{want:g} / {self.plan['max']:g}")
            if book[s]["needs_manual_grade"]:
                failures.append(f"{s}: still needs manual grading")
        if book[STUDENTS[0]]["seconds_late"] > 0:
            failures.append(f"{STUDENTS[0]} submitted before the deadline but is marked late")
        if not book[STUDENTS[1]]["seconds_late"] > 0:
            failures.append(f"{STUDENTS[1]} submitted after the deadline but is not late: "
                            f"{book[STUDENTS[1]]}")
        if failures:
            raise ClassroomError("gradebook check failed:\n  " + "\n  ".join(failures))
        log(f"the teacher's gradebook holds both submissions; {STUDENTS[1]} is late by "
            f"{book[STUDENTS[1]]['seconds_late']:.1f} s, {STUDENTS[0]} is on time")
        return book

    def check_feedback(self) -> None:
        for s in STUDENTS:
            found = sorted((self.home[s] / self.assignment / "feedback").rglob("*.html"))
            if len(found) != 1:
                raise ClassroomError(f"{s} should hold one feedback file, found {found}")
            html = found[0].read_text(errors="replace")
            other = STUDENTS[1] if s == STUDENTS[0] else STUDENTS[0]
            if SIGNED.format(student=s) not in html:
                raise ClassroomError(f"{s}'s feedback does not show their own answer")
            if SIGNED.format(student=other) in html:
                raise ClassroomError(f"{s}'s feedback shows {other}'s answer")
        log("each student's feedback shows their own answer and not the other's")

    def check_permissions(self) -> None:
        """Each student, as that Unix user, tries what they must not be able to do."""
        a = self.assignment
        course_inbound = self.exchange / COURSE_ID / "inbound"
        feedback = self.exchange / COURSE_ID / "feedback"
        submissions = {s: sorted(course_inbound.glob(f"{s}+{a}+*")) for s in STUDENTS}
        if self.breakage == "world-readable":
            self.break_exchange()  # again: feedback/ did not exist the first time
        needles = secret_lines(self.source, self.release)
        if not needles:
            raise ClassroomError(f"{a} has no hidden test: nothing to check")
        failures = []
        for s in STUDENTS:
            other = STUDENTS[1] if s == STUDENTS[0] else STUDENTS[0]
            must_fail = [
                str(course_inbound),                      # list the submissions
                str(feedback),                            # list everybody's feedback
                str(self.home[other]),                    # the other's home, working copy
                str(self.home[other] / a / self.notebook),
                str(self.course),                         # the course directory
                str(self.course / "source" / a / self.notebook),
                str(self.course / "gradebook.db"),
                str(self.course / "submitted" / other / a / self.notebook),
                str(self.course / "autograded" / other / a / self.notebook),
                str(self.state),                          # the Hub's database and secret
            ]
            request = {"must_fail": must_fail,
                       "scan": [str(self.exchange), str(self.home[s])],
                       "needles": needles + [SIGNED.format(student=other)]}
            out = json.loads(as_user(s, ["python", "-c", PROBE], input=json.dumps(request),
                                     timeout=300).stdout)
            for path, what in out["denied"].items():
                if what is None:
                    continue
                if what.startswith("listed"):
                    failures.append(f"{s} could list {path} ({what})")
                else:
                    failures.append(f"{s} could {what} {path}")
            for path, needle in out["found"]:
                kind = ("another student's answer" if needle == SIGNED.format(student=other)
                        else "a hidden test or mark scheme")
                failures.append(f"{s} can read {kind} in {path}: {needle!r}")
            # the other's submission in inbound/ exists (as root we see it) but is unlisted
            if not submissions[other]:
                failures.append(f"no submission of {other} in {course_inbound}")
        if failures:
            raise ClassroomError("permission check failed:\n  " + "\n  ".join(failures))
        log(f"permission checks passed: as each student, {len(must_fail)} paths refused "
            "(PermissionError) - exchange inbound/ and feedback/ listings, the other "
            "student's home and files, the course's source/, gradebook.db, submitted/, "
            f"autograded/, the Hub's state; no readable file holds any of {len(needles)} "
            "hidden-test or mark-scheme lines or the other student's answer")

    # --- teardown -----------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop everything started here; return what could not be cleaned up."""
        problems = []
        if self.hub is not None and self.hub.poll() is None:
            os.killpg(self.hub.pid, signal.SIGTERM)  # the Hub stops the servers and proxy
            try:
                self.hub.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("JupyterHub did not stop within 60 s on SIGTERM: killed")
        if self.hub is not None:
            try:
                os.killpg(self.hub.pid, signal.SIGKILL)  # anything left in its session
            except ProcessLookupError:
                pass
            self.hub.wait()
        if self.proxy_pid and alive(self.proxy_pid):
            problems.append(f"the proxy (pid {self.proxy_pid}) outlived the Hub: killed")
            kill_pids([self.proxy_pid], signal.SIGKILL)
        for uid in self.uids:
            left = pids_of(uid)
            if left:
                problems.append(f"processes of uid {uid} outlived the Hub: {left}: killed")
                kill_pids(left, signal.SIGKILL)
        for name in (TEACHER, *STUDENTS):
            try:
                remove_account(name)
            except ClassroomError as err:
                problems.append(str(err))
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        time.sleep(0.5)
        still = sorted(set(self.ports) & listening_ports())
        if still:
            problems.append(f"ports of the run still listening: {still}")
        gone = [n for n in (TEACHER, *STUDENTS) if _exists(n)]
        if gone:
            problems.append(f"accounts not removed: {gone}")
        return problems


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", help="default: the first with a written answer")
    parser.add_argument("--break", dest="breakage", choices=["world-readable"],
                        help="break the exchange's permissions on purpose: the run must fail")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make classroom must run as root (it creates Unix accounts)", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    t0 = time.time()
    failed = None
    room = None
    try:
        assignment = choose_assignment(args.assignment)
        room = Classroom(assignment, args.breakage)
        log(f"assignment {assignment}")
        room.setup()
        p = room.plan
        log(f"plan: {STUDENTS[0]} submits the reference; {STUDENTS[1]} answers "
            f"{p['broken']} wrongly (tests {', '.join(p['lost_tests'])} must fail) and "
            f"writes other text for {', '.join(p['written']) or '(no written answer)'}")
        room.start_hub()
        room.start_servers()
        room.check_extensions()
        room.release_and_fetch()
        room.submit_all()
        room.grade()
        book = room.check_scores()
        room.check_feedback()
        room.check_permissions()
        print()
        print(f"Scores for {assignment} (expected from the notebook's points):")
        for s in STUDENTS:
            late = book[s]["seconds_late"]
            print(f"  {s}: {book[s]['score']:g} / {book[s]['max_score']:g}"
                  f"{f'  (late by {late:.1f} s)' if late > 0 else '  (on time)'}")
        print()
    except (ClassroomError, SystemExit, subprocess.TimeoutExpired, OSError) as err:
        failed = err
    finally:
        if room is not None:
            log("stopping the Hub, the servers and the proxy; removing the accounts")
            problems = room.stop()
            for problem in problems:
                print(f"cleanup: {problem}", file=sys.stderr)
            if problems and failed is None:
                failed = ClassroomError("cleanup left something behind")
            if not problems:
                log("no process of the run left, no port of the run listening, accounts "
                    "removed")
    log(f"wall time {time.time() - t0:.0f} s")
    if failed is not None:
        print(f"\nmake classroom FAILED: {failed}", file=sys.stderr)
        return 1
    print("make classroom passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
