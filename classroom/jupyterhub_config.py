# JupyterHub configuration of the course "Wide Networks" (JupyterHub 5, nbgrader 0.9).
#
#   jupyterhub -f classroom/jupyterhub_config.py        (as root, from any directory)
#
# Local Unix accounts log in with their password (PAM); each user's Jupyter server runs as
# that user (LocalProcessSpawner). The teacher gets nbgrader's formgrader, the students the
# Assignments tab without it. book/teaching.md ("Running the course on JupyterHub") says
# how to set up a server; `make classroom` (classroom/run_class.py) runs a whole class with
# this file on the loopback. Everything a site changes is read from the environment:
#
#   CLASSROOM_TEACHERS  CLASSROOM_STUDENTS   space-separated account names
#   CLASSROOM_IP        CLASSROOM_PORT       where the Hub listens (127.0.0.1:8000)
#   CLASSROOM_HUB_PORT  CLASSROOM_PROXY_API_PORT  internal ports on 127.0.0.1 (8081, 8001)
#   CLASSROOM_STATE     the Hub's database, cookie secret and pid files (/srv/jupyterhub)
#   CLASSROOM_EXCHANGE  nbgrader's exchange directory (/srv/nbgrader/exchange)
#   CLASSROOM_COURSE    the teacher's course directory (~/course, i.e. in the teacher's home)
#   CLASSROOM_PYTHONPATH  added to the users' PYTHONPATH (a checkout holding ntk_lib when
#                       ntk_lib is not installed in the environment)
#   CLASSROOM_LD_LIBRARY_PATH  the users' LD_LIBRARY_PATH (the test run's copy of Python)
#   CLASSROOM_SINGLEUSER  the users' jupyterhub-singleuser (default: next to this Python)
#   CLASSROOM_API_TOKEN a token for a service "classroom-run" that may create users, start
#                       their servers and issue their tokens (only the test run sets it)
import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821

HERE = Path(__file__).resolve().parent
env = os.environ.get

TEACHERS = set(env("CLASSROOM_TEACHERS", "teacher").split())
STUDENTS = set(env("CLASSROOM_STUDENTS", "").split())
IP = env("CLASSROOM_IP", "127.0.0.1")
PORT = int(env("CLASSROOM_PORT", "8000"))
STATE = Path(env("CLASSROOM_STATE", "/srv/jupyterhub"))
EXCHANGE = env("CLASSROOM_EXCHANGE", "/srv/nbgrader/exchange")
# The jupyterhub-singleuser of the Python environment the Hub runs in (the course's venv).
BIN = Path(sys.executable).parent

# --- network: the public port of the proxy, everything else on the loopback ------------
c.JupyterHub.bind_url = f"http://{IP}:{PORT}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env('CLASSROOM_HUB_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('CLASSROOM_PROXY_API_PORT', '8001')}"
# configurable-http-proxy from npm, as `make classroom` installs it (npm ci in classroom/);
# otherwise the one on PATH (npm install -g configurable-http-proxy).
_chp = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
if _chp.exists():
    c.ConfigurableHTTPProxy.command = [str(_chp)]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
# On a real server, serve HTTPS: c.JupyterHub.ssl_cert / ssl_key, or a reverse proxy.

# --- state -------------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the Hub stops every user's server
c.JupyterHub.cleanup_proxy = True

# --- users: local accounts, passwords checked by PAM --------------------------------------
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = TEACHERS | STUDENTS
# Nobody is a Hub admin: an admin can open every user's server, and nbgrader needs none.
c.Authenticator.admin_users = set()

# --- each user's server: their own process, as their own Unix user -------------------------
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [env("CLASSROOM_SINGLEUSER", str(BIN / "jupyterhub-singleuser"))]
c.Spawner.ip = "127.0.0.1"
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 180  # a busy machine needs a while to import JupyterLab
c.Spawner.http_timeout = 180

CONFIG = HERE / "jupyter"  # jupyter config folders: common/, teacher/, student/


def per_role(spawner):
    """The Jupyter config path of a user's server: teacher or student settings.

    teacher/: the course directory for the formgrader; student/: formgrader, course list
    and "create assignment" switched off (server and JupyterLab extensions); common/:
    the course id and the exchange, for both.
    """
    role = "teacher" if spawner.user.name in TEACHERS else "student"
    environment = {
        "JUPYTER_CONFIG_PATH": os.pathsep.join([str(CONFIG / role), str(CONFIG / "common")]),
        "CLASSROOM_EXCHANGE": EXCHANGE,
        "OMP_NUM_THREADS": env("OMP_NUM_THREADS", "1"),
        "MKL_NUM_THREADS": env("MKL_NUM_THREADS", "1"),
    }
    if role == "teacher" and env("CLASSROOM_COURSE"):
        environment["CLASSROOM_COURSE"] = env("CLASSROOM_COURSE")
    if env("CLASSROOM_PYTHONPATH"):
        environment["PYTHONPATH"] = env("CLASSROOM_PYTHONPATH")
    if env("CLASSROOM_LD_LIBRARY_PATH"):
        environment["LD_LIBRARY_PATH"] = env("CLASSROOM_LD_LIBRARY_PATH")
    spawner.environment.update(environment)


c.Spawner.pre_spawn_hook = per_role

# --- the test run's service token (make classroom) ------------------------------------------
if env("CLASSROOM_API_TOKEN"):
    c.JupyterHub.services = [{"name": "classroom-run", "api_token": env("CLASSROOM_API_TOKEN")}]
    c.JupyterHub.load_roles = [
        {
            "name": "classroom-run",
            "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users"],
            "services": ["classroom-run"],
        }
    ]
