import pytest

from media_app.models import Media, MediaStatus
from media_app.prepared import PreparedQuery


@pytest.mark.django_db
def test_prepared_query_binds_new_parameters_each_time():
    Media.objects.create(server_name="a.example", media_id="one", status=MediaStatus.PENDING, media_length=5)
    Media.objects.create(server_name="b.example", media_id="two", status=MediaStatus.STORED, media_length=7)
    query = PreparedQuery(
        lambda server, media_id: Media.objects.filter(server_name=server, media_id=media_id).values_list(
            "media_id", "media_length", "status"
        )[:1]
    )
    assert query.fetchone("a.example", "one") == ("one", 5, "pending")
    assert query.fetchone("b.example", "two") == ("two", 7, "stored")
    assert query.fetchone("a.example", "two") is None


@pytest.mark.django_db
def test_prepared_query_refuses_values_the_orm_inlines():
    query = PreparedQuery(lambda flag: Media.objects.filter(protected=flag).values_list("pk")[:1], placeholders=(True,))
    with pytest.raises(ValueError):
        query.fetchone(False)


@pytest.mark.django_db
def test_prepared_query_refuses_ambiguous_placeholders():
    query = PreparedQuery(
        lambda a, b: Media.objects.filter(media_length=a, pk=b).values_list("pk")[:1], placeholders=(5, 5)
    )
    with pytest.raises(ValueError):
        query.fetchone(1, 2)
