import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small CPU workloads: one intra-op thread avoids OpenMP spinning when the 2 cores are
    shared (measured 0.4 s vs 2-6 s per SmolLM2 forward under load); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def qa_examples():
    """``qa_examples(n)``: n tiny QA examples of 3 documents, the gold one and the answer
    changing with the example (for log-prob and dose-response tests on tiny models)."""
    from ropedim.qa_data import Doc, Example

    def make(n: int = 5) -> list:
        out = []
        for i in range(n):
            docs = tuple(Doc(f"t{j}", "word " * (j + 2 * i) + f"fact {j}", j == i % 3) for j in range(3))
            out.append(Example(str(i), "which fact" + "?" * i, (f"fact {i % 3}",), docs, i % 3))
        return out
    return make
