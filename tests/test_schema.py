import io
import json

import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from curation.schema import SAMPLE_SCHEMA, SAMPLE_SCHEMA_VERSION, Sample, content_id
from synth.trajectory import TRAJECTORY_SCHEMA, TRAJECTORY_SCHEMA_VERSION


def png(color=(10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sample_round_trips_through_arrow():
    sample = Sample(source="s", category="reasoning", question="What is 2+2?", images=[{"bytes": png()}],
                    answer="4", answer_type="number", meta={"k": 1})
    table = pa.Table.from_pylist([sample.to_row()], schema=SAMPLE_SCHEMA)
    back = Sample.from_row(table.to_pylist()[0])
    assert back == sample
    assert back.meta == {"k": 1}


def test_content_id_is_stable_and_content_sensitive():
    a = content_id("What  is THIS?", [png()])
    assert a == content_id("what is this?", [png()])  # whitespace and case do not matter
    assert a != content_id("what is this?", [png((1, 2, 3))])
    assert a != content_id("what is that?", [png()])


def test_schemas_carry_versions_and_datasets_features():
    for schema, version in ((SAMPLE_SCHEMA, SAMPLE_SCHEMA_VERSION), (TRAJECTORY_SCHEMA, TRAJECTORY_SCHEMA_VERSION)):
        assert schema.metadata[b"deepeyes_schema_version"].decode() == version
        features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        assert set(features) == set(schema.names)
        assert features["images"]["feature"]["_type"] == "Image"


@pytest.mark.parametrize("field,value", [("category", "cooking"), ("answer_type", "essay"), ("question", ""), ("bogus", 1)])
def test_invalid_samples_are_refused(field, value):
    fields = dict(source="s", category="search", question="q?", answer="a", answer_type="text")
    fields[field] = value
    with pytest.raises(ValidationError):
        Sample(**fields)
