"""A rollout as model inputs: the causal and seq2seq layouts, by hand."""

from rlaf_ray.ppo.batch import collate


def test_collate_layout():
    batch = collate([[5, 6], [7]], [[1, 2, 3], [4]], pad_id=0)
    assert batch.inputs["input_ids"].tolist() == [[5, 6, 1, 2, 3], [0, 7, 4, 0, 0]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch.inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.logits_start == 1  # the last prompt position predicts the first response token


def test_collate_seq2seq_layout():
    batch = collate([[5, 6], [7]], [[1, 2, 3], [4]], pad_id=0, decoder_start_token_id=0)
    assert batch.inputs["input_ids"].tolist() == [[5, 6], [7, 0]]  # the encoder reads right-padded
    assert batch.inputs["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch.inputs["decoder_input_ids"].tolist() == [[0, 1, 2, 3], [0, 4, 0, 0]]
    assert batch.inputs["decoder_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.logits_start == 0  # the start token predicts the first response token
