from pathlib import Path

from careflow import hookimpl


@hookimpl
def careflow_template_dirs() -> list[Path]:
    # Ships templates/car_anniversary/sms.en.j2, sms.zh_CN.j2, ... inside the package.
    return [Path(__file__).parent / "templates"]
