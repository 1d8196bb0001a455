"""A matplotlib backend for the kernel: `plt.show()` hands each open figure to the kernel."""

from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas  # noqa: F401


def show(*_args, **_kwargs) -> None:
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    from synth.tools import kernel_worker

    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=100)
        buffer.seek(0)
        kernel_worker.SHOWN_IMAGES.append(Image.open(buffer).convert("RGB"))
    plt.close("all")
