from broker.token import KeyRing, LocalSigner
from tests.helpers import claims, good_token, verifier


def test_minted_token_verifies_with_either_algorithm(
    ring: KeyRing, ed_signer: LocalSigner, es_signer: LocalSigner
) -> None:
    for signer in (ed_signer, es_signer):
        grant = verifier(ring).verify(good_token(signer))
        assert grant.claims == claims()
        assert grant.allows("bucket", "s3://acme-reports/agents/t1/out.csv", "write")
        assert not grant.allows("bucket", "s3://acme-reports/agents/t2/out.csv", "write")
