"""Two solves silenced at once, from two threads, must leave the process's output as it was."""

import os
import tempfile
import threading

from bitqnn.engines.quiet import quiet_native_output


def target_of_fd1() -> tuple[int, int]:
    status = os.fstat(1)
    return status.st_dev, status.st_ino


def test_overlapping_quiet_solves_restore_the_real_output():
    with tempfile.TemporaryFile() as real:
        saved = os.dup(1)
        os.dup2(real.fileno(), 1)  # a known target, whatever pytest has made of fd 1
        try:
            before = target_of_fd1()
            first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

            def first() -> None:  # enters first, leaves first
                with quiet_native_output():
                    first_in.set()
                    second_in.wait(5)
                first_out.set()

            def second() -> None:  # enters while the first is silenced, leaves last
                first_in.wait(5)
                with quiet_native_output():
                    second_in.set()
                    first_out.wait(5)
                    assert target_of_fd1() != before  # still silenced while a solve runs

            threads = [threading.Thread(target=first), threading.Thread(target=second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert target_of_fd1() == before
        finally:
            os.dup2(saved, 1)
            os.close(saved)
