"""The agent's data plane: makes the node's kernel match the `NetworkPlane` its manager
sends (VXLAN overlays, service discovery, VIPs and the routing mesh)."""
from swarmlet.network.dataplane import ApplyResult, OverlayDataPlane
from swarmlet.network.validation import PlaneError

__all__ = ["ApplyResult", "OverlayDataPlane", "PlaneError"]
