"""``FLEET_EXTRA_MODULES`` of the limits tests' worker processes: the test built-ins, declared
into the process's built-ins (imported only by those processes, never by pytest itself)."""

from shared.functions import BUILTINS
from tests.integration.limited_functions import declare

declare(BUILTINS)
