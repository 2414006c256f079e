"""Tests of the version compatibility check."""

from absl.testing import absltest
from absl.testing import parameterized

from keras_mlres import version


class CheckCompatibleTest(parameterized.TestCase):

    @parameterized.parameters(None, "0.1.0", "0.9.3", "0.1.0rc1")
    def test_same_major_version_is_accepted(self, recorded):
        version.check_compatible(recorded, "The file")

    @parameterized.parameters("1.0.0", "2.3", "garbage")
    def test_other_major_version_is_rejected(self, recorded):
        with self.assertRaisesRegex(
            version.IncompatibleVersionError,
            f"The file was written by keras_mlres {recorded}, which is "
            "incompatible.*pip install",
        ):
            version.check_compatible(recorded, "The file")


if __name__ == "__main__":
    absltest.main()
