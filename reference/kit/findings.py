"""The API diagnosis's results: each deviation from the contract (:class:`Finding`) and the whole
:class:`Diagnosis` with the maps it proposes and uses (``reference.kit.diagnose`` makes them; conftest, the card and the
report read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from reference.kit.adapter import ImplMap


#: Clauses (prefixes) whose findings the diagnosis test judges (``tests/test_contract.py::test_api_diagnosis``).
DIAGNOSED = ("api.", "build.", "module.", "mha.static-attention")


@dataclass(frozen=True)
class Finding:
    """One deviation from the contract: its clause, where, the contract's name, the closest match found."""

    clause: str
    where: str
    contract: str
    found: str | None
    message: str
    blocking: bool = True  # tests cannot reach this part of the contract without a map entry

    def line(self) -> str:
        return f"[{self.clause}] {self.message}"


@dataclass
class Diagnosis:
    """Findings of one implementation, the map proposed for them and the map in effect (user's + proposed)."""

    impl: str
    findings: list[Finding] = field(default_factory=list)
    proposed: ImplMap = field(default_factory=ImplMap)
    effective: ImplMap = field(default_factory=ImplMap)
    user: ImplMap = field(default_factory=ImplMap)  # the map the user gave (--impl-map)

    def unaccepted(self) -> list[Finding]:
        """API findings the user's own map does not cover: deviations the diagnosis test reports as failures."""
        return [f for f in self.findings if f.clause.startswith(DIAGNOSED)
                and not (covered(f, self.user) or (f.contract == "(order)" and f.where in self.user.arguments))]

    def unresolved(self) -> list[Finding]:
        """Blocking findings the effective map does not cover: what stops tests from reaching the contract."""
        return [f for f in self.findings if f.blocking and not covered(f, self.effective)]

    def blackbox_reachable(self) -> bool:
        """Whether ``build_transformer`` and the Transformer's ``encode``/``decode``/``project`` are reached, so the
        black-box tests (``@pytest.mark.blackbox``) can run although other deviations stop the rest."""
        return not any(f.clause == "build.structure" or f.where in ("build_transformer", "Transformer")
                       for f in self.unresolved())

    def not_reached_reason(self) -> str | None:
        left = self.unresolved()
        if not left:
            return None
        first = left[0]
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        advice = " (write an --impl-map)" if first.clause.startswith("api.") else ""
        return f"not reached because of {first.clause}: {first.message}{more}{advice}"

    def _mark(self, f: Finding) -> str:
        """"  -> mapped" for a blocking finding the map in effect covers, "  -> accepted by your map" for an
        argument order your map's ``[arguments.X]`` table accepts."""
        if f.contract == "(order)" and f.where in self.user.arguments:
            return f"  -> accepted by your map's [arguments.{f.where}]"
        return "  -> mapped" if f.blocking and covered(f, self.effective) else ""

    def lines(self) -> list[str]:
        if not self.findings:
            return [f"API diagnosis of {self.impl}: every contract name, argument and attribute found"]
        out = [f"API diagnosis of {self.impl}: {len(self.findings)} deviation(s) from the contract"]
        out += ["  " + f.line() + self._mark(f) for f in self.findings]
        text = toml(self.proposed)
        if text:
            out += ["  the kit mapped these names itself; save the map below as a file and pass --impl-map FILE to "
                    "edit it:"] + ["    " + line for line in text.splitlines()]
        return out


def toml(m: ImplMap) -> str:
    """``m.to_toml()`` with its top-level keys (``masks``, ``variant``) first, where they differ from the default
    and the map's own TOML does not already write them."""
    text = m.to_toml() if m else ""
    top = [f'{key} = "{value}"' for key, value, default in (("variant", m.variant, None),
                                                             ("masks", m.masks, "head-dim"))
           if value != default and not any(line.startswith(f"{key} =") for line in text.splitlines())]
    return "\n".join(top + ([""] if top and text else []) + ([text] if text else []))


def covered(f: Finding, m: ImplMap) -> bool:
    if f.contract == "(masks)":  # the mask layout: a top-level key of the map
        return f.found is not None and m.masks == f.found
    if f.clause == "api.names":
        return f.contract in m.classes
    if f.clause == "api.signatures":
        return f.contract in m.arguments.get(f.where, {})
    if f.clause in ("api.attributes", "mha.static-attention"):
        return f.contract in m.attributes.get(f.where, {})
    return False
