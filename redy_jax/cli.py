"""The ``redy`` command line: ``redy spec``, ``redy evaluate``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ReRAM crossbar accelerator simulator with ReDy dynamic precision.")


@app.callback()
def _group():
    """ReRAM crossbar accelerator simulator with ReDy dynamic precision."""


def _overrides(items: list[str] | None) -> dict:
    """Parses ``--set field=value`` pairs into typed spec overrides."""
    import dataclasses

    from redy_jax.hw import HardwareSpec

    types = {f.name: f.type for f in dataclasses.fields(HardwareSpec)}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects field=value, got {item!r}")
        k, v = item.split("=", 1)
        if k not in types or k == "components":
            raise typer.BadParameter(f"--set: unknown HardwareSpec field {k!r}")
        t = str(types[k])
        if t == "bool":
            out[k] = v.lower() in ("1", "true", "yes", "on")
        elif t == "int":
            out[k] = int(v)
        elif t == "float":
            out[k] = float(v)
        else:
            out[k] = v
    return out


@app.command()
def spec(
    preset: Annotated[str, typer.Option(help="hardware preset (isaac, isaac_16bit)")] = "isaac",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: "
                                                   "--set adc_bits=6")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
):
    """Print a hardware spec and its derived figures (power, area, GOPS/W)."""
    from redy_jax.hw import derived_figures, get_preset

    try:
        s = get_preset(preset, **_overrides(set_))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    fig = derived_figures(s)
    if as_json:
        typer.echo(json.dumps({"spec": s.to_dict(), **fig}, indent=2))
        return
    d = s.to_dict()
    d.pop("components")
    width = max(map(len, list(d) + list(fig)))
    typer.echo(f"HardwareSpec '{s.name}'")
    for k, v in d.items():
        typer.echo(f"  {k:<{width}}  {v}")
    typer.echo("Derived figures")
    for k, v in fig.items():
        typer.echo(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


if __name__ == "__main__":  # pragma: no cover
    app()
