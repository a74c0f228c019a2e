"""Channel (structured) pruning: remove whole filters, coupled layers together.

`prune_channels` finds the channel groups of a model's graph (`graph.py`),
wraps their layers in `ChannelMaskWrapper`s sharing one mask per group held
by a `ChannelPruningModel` (`model.py`), and prunes during `fit`;
`strip_channels` rebuilds the model with fewer filters.
"""

from tfcompress.pruning.channels.api import channel_groups, prune_channels, sparsity_for_macs
from tfcompress.pruning.channels.graph import ChannelGroup
from tfcompress.pruning.channels.model import ChannelPruningModel
from tfcompress.pruning.channels.strip import strip_channels
from tfcompress.pruning.channels.wrapper import ChannelMaskWrapper

__all__ = [
    "ChannelGroup",
    "ChannelMaskWrapper",
    "ChannelPruningModel",
    "channel_groups",
    "prune_channels",
    "sparsity_for_macs",
    "strip_channels",
]
