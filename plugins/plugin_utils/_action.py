# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared action plugin: run the client in the controller process when the task runs on the controller,
otherwise ship the module. Both paths use the one argument spec and the one client, and give the same result.
Private to the collection."""

from __future__ import annotations

import contextlib
import os
import subprocess
import typing as t

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.fne.offline_sync.plugins.module_utils._errors import FneError
from ansible_collections.fne.offline_sync.plugins.module_utils._modules import (
    MODULE_OPTIONS,
    argument_spec,
    execute,
    failure_result,
)

display = Display()

COLLECTION = "fne.offline_sync"
# Task variable that turns the in-process path off (the module is then shipped even to the controller).
IN_PROCESS_VAR = "fne_offline_sync_in_process"
LOCAL_CONNECTIONS = frozenset(("local", "ansible.builtin.local"))


@contextlib.contextmanager
def task_environment(env: dict[str, str]) -> t.Iterator[None]:
    """The task's `environment:` as the process environment (env fallbacks and proxy variables read it there, as
    they do in a shipped module). Each task runs in its own worker process; restore it anyway."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update({key: str(value) for key, value in env.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def inject_invocation(task_vars: dict[str, t.Any]) -> bool:
    """Whether a shipped module's result would carry `invocation`: always before ansible-core 2.21, which made it
    the INJECT_INVOCATION setting (off by default). Reading a setting the running core does not define raises."""
    if "INJECT_INVOCATION" not in C.config.get_configuration_definitions():
        return True
    return bool(C.config.get_config_value("INJECT_INVOCATION", variables=task_vars))


def run_command(argv: list[str], environ_update: dict[str, str]) -> tuple[int, str]:
    """The vendor tool in the controller process: what AnsibleModule.run_command does for a shipped module."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, **environ_update), check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


class FneAction(ActionBase):
    MODULE = ""
    _supports_check_mode = True
    _supports_async = True

    def in_process(self, task_vars: dict[str, t.Any]) -> bool:
        """True when the module would run on the controller as the controller's user."""
        if self._task.async_val or self._play_context.become:
            return False
        if self._connection.transport not in LOCAL_CONNECTIONS:
            return False
        switch = task_vars.get(IN_PROCESS_VAR, True)
        return boolean(self._templar.template(switch), strict=False)

    def run(self, tmp: str | None = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        module_name = f"{COLLECTION}.{self.MODULE}"
        if not self.in_process(task_vars):
            wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
            try:
                module_args = self.shipped_args()
            except AnsibleError as exc:
                return dict(result, failed=True, msg=exc.message)
            result.update(self._execute_module(module_name=module_name, module_args=module_args,
                                               task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        result.update(self.run_in_process(module_name, task_vars))
        return result

    def shipped_args(self) -> dict[str, t.Any]:
        """The module's arguments when it is shipped to the host (a module may send it files first)."""
        return self._task.args.copy()

    def run_in_process(self, module_name: str, task_vars: dict[str, t.Any]) -> dict[str, t.Any]:
        """What AnsibleModule would do: validate (with env fallbacks), run, scrub no_log values from the result."""
        environment: dict[str, t.Any] = {}
        self._compute_environment_string(environment)
        validator = ArgumentSpecValidator(argument_spec(self.MODULE), **MODULE_OPTIONS[self.MODULE])
        with task_environment(environment):
            validation = validator.validate(dict(self._task.args))
            no_log_values = validation._no_log_values
            params = validation.validated_parameters
            warnings: list[str] = []
            error = validation.errors.errors[0] if validation.errors.errors else None
            if error is not None:
                msg = validation.errors.msg
                if isinstance(error, UnsupportedError):
                    msg = f"Unsupported parameters for ({module_name}) module: {msg}"
                output: dict[str, t.Any] = {"failed": True, "msg": msg}
            else:
                try:
                    output = execute(self.MODULE, params, bool(self._task.check_mode), warnings.append, run_command)
                except FneError as exc:
                    output = failure_result(exc)
                    output.update(failed=True, msg=exc.msg)
        if inject_invocation(task_vars):
            output.setdefault("invocation", {"module_args": params})
        # AnsibleModule._return_formatted: keep bools and None, strip every no_log value everywhere else.
        preserved = {key: value for key, value in output.items() if value is None or isinstance(value, bool)}
        output = remove_values(output, no_log_values)
        output.update(preserved)
        for warning in warnings:
            display.warning(remove_values(warning, no_log_values))
        return output
