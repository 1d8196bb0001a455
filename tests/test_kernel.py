import io

from PIL import Image

from synth.kernel import KernelConfig, PythonKernel


def png(size=(120, 90), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_state_images_and_displayed_images():
    with PythonKernel([png(), png((50, 60))], KernelConfig(timeout_s=20)) as kernel:
        first = kernel.execute("x = 41\nprint(image_1.size, image_2.size)\nimage_1.crop((0, 0, 10, 10)).show()")
        assert first.status == "ok" and first.stdout.strip() == "(120, 90) (50, 60)"
        assert len(first.images) == 1
        shown = Image.open(io.BytesIO(first.images[0]))
        assert min(shown.size) >= 32  # tiny crops are upscaled for the vision encoder
        second = kernel.execute("print(x + 1)")
        assert second.stdout.strip() == "42"
        plot = kernel.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
        assert plot.status == "ok" and len(plot.images) == 1


def test_kernels_do_not_share_state():
    with PythonKernel([]) as a, PythonKernel([]) as b:
        a.execute("secret = 1")
        assert b.execute("print(secret)").status == "code_error"


def test_code_error_timeout_and_death_are_distinct_and_recoverable():
    with PythonKernel([png()], KernelConfig(timeout_s=1.5)) as kernel:
        error = kernel.execute("1 / 0")
        assert error.status == "code_error" and "ZeroDivisionError" in error.stderr
        kernel.execute("kept = 5")
        assert kernel.execute("print(kept)").stdout.strip() == "5"  # an error does not lose state
        timeout = kernel.execute("while True:\n    pass")
        assert timeout.status == "timeout" and "timed out" in timeout.stderr
        after = kernel.execute("print(image_1.size)")
        assert after.status == "ok" and "restarted" in after.stderr  # fresh kernel, images preloaded
        died = kernel.execute("import os\nos._exit(1)")
        assert died.status == "kernel_died"


def test_output_is_capped_and_environment_scrubbed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    with PythonKernel([], KernelConfig(output_limit=100)) as kernel:
        long = kernel.execute("print('a' * 10000)")
        assert len(long.stdout) < 200 and "truncated" in long.stdout
        env = kernel.execute("import os\nprint(os.environ.get('OPENAI_API_KEY'))")
        assert env.stdout.strip() == "None"
