"""The expert knowledge base: HDFS templates in ``rationad.hdfs_kb`` (``rationad/data/hdfs_kb.json``), the BGL/Spirit
template rules in ``rationad.template_rules``. Both live in the daemon, which writes HDFS walks and checks served
rationales with them; training imports them from here.

HDFS templates are matched by their text (Loghub ``<*>`` wildcards) against a line's masked template, never by id:
the two Loghub numberings disagree. BGL/Spirit knowledge is an ordered list of keyword rules (first match wins).
"""

from __future__ import annotations

from rationad.hdfs_kb import HdfsTemplate, KnowledgeError, hdfs_pairs, hdfs_templates, match_hdfs  # noqa: F401
from rationad.template_rules import Rule, match_rule, template_rules  # noqa: F401 (re-exported)
