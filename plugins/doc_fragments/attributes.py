# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared attribute docs."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  action_group:
    description: Use C(group/fne.offline_sync.fne) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - fne.offline_sync.fne
"""
