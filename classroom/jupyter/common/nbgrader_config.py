# nbgrader settings shared by everyone on the course's JupyterHub (teacher and students).
# jupyterhub_config.py puts this folder on every user's JUPYTER_CONFIG_PATH; run nbgrader
# in a terminal with the same JUPYTER_CONFIG_PATH to get the same settings.
import os

c = get_config()  # noqa: F821

c.CourseDirectory.course_id = "wide-networks"

# The exchange: created by root before the course starts, mode 0777 (nbgrader's docs:
# `mkdir -p /srv/nbgrader/exchange && chmod 0777 /srv/nbgrader/exchange`). nbgrader sets
# the modes inside it: outbound/ readable by all, inbound/ writable but not listable
# (0733), feedback/ not listable (0711), submission and feedback names unguessable.
c.Exchange.root = os.environ.get("CLASSROOM_EXCHANGE", "/srv/nbgrader/exchange")
