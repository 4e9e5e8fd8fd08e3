"""A simulated site: virtual meters on half-duplex buses behind virtual concentrators/DTUs.

The simulator is the codecs' conformance peer: every meter decodes requests and encodes
replies with the codecs in :mod:`libs.protocols`, never with private frame code. Start it
with ``meterflow simulate`` (see :mod:`libs.protocols.simulator.cli`), or in-process::

    site = Site(default_site())          # or Site(load_site("site.toml"), clock=ManualClock())
    await site.start(host="127.0.0.1", base_port=4600, pty=False)
    site.endpoints()                     # [{"bus": "c1-b1", "tcp": "127.0.0.1:4600", ...}, ...]
    await site.stop()
"""

from .clock import Clock, ManualClock, RealClock
from .faults import LinkFault
from .runtime import Site
from .site import SiteConfig, default_site, load_site

__all__ = [
    "Clock",
    "LinkFault",
    "ManualClock",
    "RealClock",
    "Site",
    "SiteConfig",
    "default_site",
    "load_site",
]
