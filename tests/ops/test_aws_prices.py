"""`make prices` (ops/aws/pricelist.py) against botocore's Stubber: the Price List API (`pricing:GetProducts`) and EC2's
spot price history answered in their real shapes, every request checked against the service models.

moto has no Price List API, so every answer is stubbed. A product document is the one botocore ships as its GetProducts
example (botocore/data/pricing/2017-10-15/examples-1.json: `product.attributes`, `terms.OnDemand.<offer>.
priceDimensions.<rate>.pricePerUnit.USD`), with the attributes and price of the product in question.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from infra.prices import PriceTable
from ops.aws import pricelist

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
REGION = "eu-west-1"


def _example() -> dict:
    """botocore's own GetProducts example document: the response shape these answers follow."""
    import botocore

    path = f"{botocore.__path__[0]}/data/pricing/2017-10-15/examples-1.json"
    with open(path) as fh:
        example = json.load(fh)["examples"]["GetProducts"][0]["output"]["PriceList"][0]
    return json.loads(example)


EXAMPLE = _example()


def product(family: str, usd: str, unit: str = "Hrs", **attributes: str) -> str:
    doc = copy.deepcopy(EXAMPLE)
    doc["product"]["productFamily"] = family
    doc["product"]["attributes"] = {"regionCode": REGION, **attributes}
    (term,) = doc["terms"]["OnDemand"].values()
    (dimension,) = term["priceDimensions"].values()
    dimension.update(unit=unit, pricePerUnit={"USD": usd})
    return json.dumps(doc)


def clients():
    pricing = boto3.session.Session(region_name="us-east-1").client(
        "pricing", aws_access_key_id="x", aws_secret_access_key="x"
    )
    ec2 = boto3.session.Session(region_name=REGION).client("ec2", aws_access_key_id="x", aws_secret_access_key="x")
    return pricing, Stubber(pricing), ec2, Stubber(ec2)


def expect(
    stub: Stubber,
    service: str,
    filters: list[dict],
    answer: list[str],
    token: str | None = None,
    next_token: str | None = None,
) -> None:
    params = {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1"}
    if token:
        params["NextToken"] = token
    response = {"FormatVersion": "aws_v1", "PriceList": answer}
    if next_token:
        response["NextToken"] = next_token
    stub.add_response("get_products", response, params)


def tm(**fields: str) -> list[dict]:
    return pricelist.term_match(**fields)


def test_refresh_reads_every_section_from_the_price_list_and_spot_history() -> None:
    pricing, stub, ec2, spot = clients()
    ec2_filters = tm(
        regionCode=REGION,
        instanceType="g5.xlarge",
        operatingSystem="Linux",
        tenancy="Shared",
        preInstalledSw="NA",
        capacitystatus="Used",
    )
    # two pages: a dedicated-host product (no BoxUsage) first, then the on-demand instance-hour
    expect(
        stub,
        "AmazonEC2",
        ec2_filters,
        [product("Compute Instance", "9.9", usagetype="EUW1-HostBoxUsage:g5")],
        next_token="page-2",
    )
    expect(
        stub,
        "AmazonEC2",
        ec2_filters,
        [
            product(
                "Compute Instance",
                "1.1230000000",
                instanceType="g5.xlarge",
                usagetype="EUW1-BoxUsage:g5.xlarge",
                vcpu="4",
                gpu="1",
            )
        ],
        token="page-2",
    )
    spot.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": "eu-west-1a",
                    "InstanceType": "g5.xlarge",
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": "0.412000",
                    "Timestamp": NOW,
                },
                {
                    "AvailabilityZone": "eu-west-1b",
                    "InstanceType": "g5.xlarge",
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": "0.455000",
                    "Timestamp": NOW,
                },
            ]
        },
        {"InstanceTypes": ["g5.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY, "EndTime": ANY},
    )
    expect(
        stub,
        "AmazonSageMaker",
        tm(regionCode=REGION, instanceName="ml.g5.xlarge"),
        [
            product("ML Instance", "0.55", usagetype="EUW1-Spot:Train:ml.g5.xlarge"),
            product("ML Instance", "1.5730000000", usagetype="EUW1-Train:ml.g5.xlarge"),
        ],
    )
    expect(
        stub,
        "AmazonSageMaker",
        tm(regionCode=REGION, instanceName="ml.m5.large"),
        [
            product("ML Instance", "0.1280000000", usagetype="EUW1-Host:ml.m5.large"),
            product("ML Instance", "0.1280000000", usagetype="EUW1-Notebk:ml.m5.large"),
        ],
    )
    expect(
        stub,
        "AmazonSageMaker",
        [*tm(regionCode=REGION), {"Type": "CONTAINS", "Field": "usagetype", "Value": "ServerlessInf"}],
        [
            product("Serverless", "0.0000224000", "Second", usagetype="EUW1-ServerlessInf:Mem-2GB"),
            product("Serverless", "0.0000112000", "Second", usagetype="EUW1-ServerlessInf:Mem-1GB"),
        ],
    )
    expect(
        stub,
        "AmazonVPC",
        tm(regionCode=REGION, productFamily="VpcEndpoint"),
        [
            product("VpcEndpoint", "0.0110000000", usagetype="EUW1-VpcEndpoint-Hours"),
            product("VpcEndpoint", "0.0100000000", "GB", usagetype="EUW1-VpcEndpoint-Bytes"),
        ],
    )
    expect(
        stub,
        "AmazonEC2",
        tm(regionCode=REGION, productFamily="NAT Gateway"),
        [
            product("NAT Gateway", "0.0480000000", usagetype="EUW1-NatGateway-Hours"),
            product("NAT Gateway", "0.0480000000", "GB", usagetype="EUW1-NatGateway-Bytes"),
        ],
    )
    expect(
        stub,
        "awskms",
        tm(regionCode=REGION),
        [
            product("Encryption Key", "1.0000000000", "Keys", usagetype="eu-west-1-KMS-Keys"),
            product("API Request", "0.0000030000", "Requests", usagetype="eu-west-1-KMS-Requests"),
        ],
    )
    old = PriceTable.load()
    with stub, spot:
        raw, kept = pricelist.refresh(
            pricing,
            ec2,
            REGION,
            {"ec2": ["g5.xlarge"], "sagemaker_training": ["ml.g5.xlarge"], "sagemaker_hosting": ["ml.m5.large"]},
            old,
            now=NOW,
        )
        stub.assert_no_pending_responses()
        spot.assert_no_pending_responses()
    assert kept == []
    assert raw["region"] == REGION
    assert raw["ec2"] == {"g5.xlarge": {"usd_per_hour": 1.123, "vcpus": 4, "gpus": 1}}
    assert raw["ec2_spot"] == {"g5.xlarge": {"usd_per_hour": 0.455}}, "the highest any zone asked"
    assert raw["sagemaker_training"] == {"ml.g5.xlarge": {"usd_per_hour": 1.573}}, "on-demand, not the spot product"
    assert raw["sagemaker_hosting"] == {"ml.m5.large": {"usd_per_hour": 0.128}}, "hosting, not the notebook product"
    assert raw["sagemaker_serverless"] == {"2048": {"usd_per_second": 0.0000224}, "1024": {"usd_per_second": 0.0000112}}
    rates = raw["rates"]
    assert rates["vpc_interface_endpoint"] == {"usd": 0.011, "unit": "AZ-hour"}
    assert rates["nat_gateway_data"] == {"usd": 0.048, "unit": "GB"}
    assert rates["kms_requests"] == {"usd": 0.03, "unit": "10k requests"}
    assert raw["rates_by_hand"] == {
        r.name: {"usd": r.usd, "unit": r.unit} for r in old.rates.values() if r.section == "rates_by_hand"
    }, "storage, logs and alarms are kept"
    for section in ("ec2", "ec2_spot", "sagemaker_training", "sagemaker_hosting", "sagemaker_serverless", "rates"):
        assert raw["sources"][section]["as_of"] == "2026-12-02"
        assert raw["sources"][section]["source"].endswith(f", {REGION}")
    assert raw["as_of"] == min(s["as_of"] for s in raw["sources"].values())


def test_the_written_table_reads_back_and_a_missing_product_keeps_the_old_price(tmp_path) -> None:
    pricing, stub, ec2, spot = clients()
    expect(
        stub,
        "AmazonEC2",
        tm(
            regionCode=REGION,
            instanceType="g5.xlarge",
            operatingSystem="Linux",
            tenancy="Shared",
            preInstalledSw="NA",
            capacitystatus="Used",
        ),
        [],
    )
    spot.add_response(
        "describe_spot_price_history",
        {"SpotPriceHistory": []},
        {"InstanceTypes": ["g5.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY, "EndTime": ANY},
    )
    expect(
        stub,
        "AmazonSageMaker",
        [*tm(regionCode=REGION), {"Type": "CONTAINS", "Field": "usagetype", "Value": "ServerlessInf"}],
        [],
    )
    for service, fields in (
        ("AmazonVPC", {"productFamily": "VpcEndpoint"}),
        ("AmazonEC2", {"productFamily": "NAT Gateway"}),
        ("awskms", {}),
    ):
        expect(stub, service, tm(regionCode=REGION, **fields), [])
    old = PriceTable.load()
    with stub, spot:
        raw, kept = pricelist.refresh(pricing, ec2, REGION, {"ec2": ["g5.xlarge"]}, old, now=NOW)
    assert raw["ec2"]["g5.xlarge"]["usd_per_hour"] == old.get("ec2", "g5.xlarge").usd_per_hour
    assert "[ec2] g5.xlarge" in kept
    assert "[ec2_spot] g5.xlarge" in kept
    assert "[sagemaker_serverless]" in kept
    assert raw["rates"]["kms_key"] == {"usd": old.rate("kms_key").usd, "unit": "key-month"}
    path = tmp_path / "prices.toml"
    path.write_text(pricelist.dumps(raw))
    table = PriceTable.load(path)
    assert table.get("ec2", "g5.xlarge").vcpus == 4
    assert table.serverless == old.serverless
    assert table.rate("s3_standard").section == "rates_by_hand"
    assert table.region == REGION


def test_an_aws_error_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    from ops.aws import clients as aws_clients

    pricing, stub, _, _ = clients()
    stub.add_client_error(
        "get_products",
        service_error_code="AccessDeniedException",
        service_message="User is not authorized to perform: pricing:GetProducts\nmore",
    )
    stub.activate()
    monkeypatch.setattr(aws_clients.Aws, "client", lambda self, service: pricing)
    monkeypatch.setenv("STACK", "nosuchstack")
    code = pricelist.main(["--output", str(tmp_path / "prices.toml"), "--region", REGION])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        "error: AWS denied GetProducts: User is not authorized to perform: "
        "pricing:GetProducts; the credentials in use need that permission (see "
        "README, 'The AWS workflow')"
    ]
    assert not (tmp_path / "prices.toml").exists(), "nothing is written when the refresh fails"


@pytest.mark.parametrize("text", ["as_of = 1\n", "not toml ["])
def test_a_broken_table_is_one_line(tmp_path, text: str) -> None:
    from infra.prices import PriceError

    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceError) as error:
        PriceTable.load(path)
    assert "\n" not in str(error.value)
