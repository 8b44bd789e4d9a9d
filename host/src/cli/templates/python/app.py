# The component's entry module, written by `tollgate policy build`: the class
# componentize-py exports, wrapping the project's policy.
import policy
from tollgate_policy._component import export

WitWorld = export(policy.route, getattr(policy, "on_complete", None))
